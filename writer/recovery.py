"""Writer recovery over the network: the asyncio shell around sixfold.core.recovery_machine.

The machine decides every step (P17 §4.3); sixfold/node_calls.py sends each step's requests
to the nodes at once, as gRPC calls with a deadline, and hands the answers back to it.
"""

from __future__ import annotations

import logging

from sixfold.clients import NodeClient
from sixfold.core.recovery_machine import Recovered, Recovery
from sixfold.node_calls import CallTimeouts, drive

__all__ = ["Recovered", "recover"]

log = logging.getLogger("sixfold.recovery")

RECOVERY_CALL_TIMEOUTS = CallTimeouts(quick_s=3.0, bulk_s=9.0)


async def recover(
    clients: list[NodeClient], owner: str, lal: int, epoch_wanted: int = 0
) -> Recovered:
    """Recover at the next epoch (or only at `epoch_wanted`): see Recovery."""
    by_name = {c.name: c for c in clients}
    machine = Recovery(list(by_name), owner, lal, epoch_wanted)

    def log_notes() -> None:
        for note in machine.notes:
            log.info("%s", note)
        machine.notes.clear()

    return await drive(machine.run(), by_name, RECOVERY_CALL_TIMEOUTS, log_notes)
