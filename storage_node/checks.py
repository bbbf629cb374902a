"""What a storage node refuses before it acts: requests with values no member would send.

Nodes serve the writer, the readers and their peers, not the public, but anyone who can
reach a node's port can call it (authentication comes later, issue 17). Each check here is
an InvalidRequestError naming the field, and nothing of the request is stored (issue 19).
"""

from __future__ import annotations

import re

from sixfold.core.errors import InvalidRequestError
from sixfold.core.record import NUMBER_MAX
from sixfold.core.segment import SegmentState

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # an instance's name
ADDRESS_PATTERN = re.compile(r"[A-Za-z0-9_.:\[\]-]{1,253}:[0-9]{1,5}")  # HOST:PORT
ROLES = frozenset({"", "reader", "writer", "starting", "taking-over"})
OWNER_CHARS_MAX = 512  # an epoch owner id: NAME@HOST:PORT#NONCE


def check_numbers(**fields: int) -> None:
    """LSNs, page numbers and epochs within the range the code handles."""
    for name, value in fields.items():
        if value > NUMBER_MAX:
            raise InvalidRequestError(f"{name} {value} is beyond the largest one ({NUMBER_MAX})")


def check_vdl(state: SegmentState, vdl: int) -> None:
    """A VDL no writer of the node's epoch can have reached: at most its LSN allocation limit
    above the highest LSN the node knows of in the epoch (P17 §4.2.1). The epoch's
    truncation range spans at least the writer's LAL, so it gives the limit."""
    check_numbers(vdl=vdl)
    epoch_range = next((r for r in state.truncations if r.epoch == state.epoch), None)
    if epoch_range is None or vdl <= state.vdl:
        return
    lal = epoch_range.through_lsn - epoch_range.after_lsn
    known = max(state.vdl, epoch_range.through_lsn, state.completeness.highest_lsn)
    if vdl > known + lal:
        raise InvalidRequestError(
            f"VDL {vdl} is beyond any LSN the writer of epoch {state.epoch} can have "
            f"allocated (the node knows LSNs to {known}; allocation stops {lal} above)"
        )


def check_registration(
    name: str, role: str, address: str, client_address: str, read_point: int
) -> None:
    """An instance reporting to the node (GetState): the topology lists what it says."""
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidRequestError(
            f"instance name {_shown(name)} is not 1-64 letters, digits, '_', '.' or '-'"
        )
    if role not in ROLES:
        raise InvalidRequestError(
            f"role {_shown(role)} is not one of {', '.join(sorted(r for r in ROLES if r))}"
        )
    for field, value in (("address", address), ("client_address", client_address)):
        if value and not ADDRESS_PATTERN.fullmatch(value):
            raise InvalidRequestError(f"{field} {_shown(value)} is not HOST:PORT")
    check_numbers(read_point=read_point)


def check_owner(owner: str) -> None:
    if len(owner) > OWNER_CHARS_MAX:
        raise InvalidRequestError(
            f"epoch owner of {len(owner)} characters is longer than {OWNER_CHARS_MAX}"
        )


def _shown(value: str) -> str:
    """A client's string in a message: never the whole of a huge one."""
    return repr(value if len(value) <= 40 else value[:40] + "…") + (
        f" ({len(value)} characters)" if len(value) > 40 else ""
    )
