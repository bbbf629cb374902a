"""The committed protobuf/gRPC modules must match what proto/ generates."""

from pathlib import Path

from sixfold.rpc.generate import generate

RPC_DIR = Path(__file__).resolve().parents[1] / "sixfold" / "rpc"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    generate(tmp_path)
    for name in ("sixfold_pb2.py", "sixfold_pb2.pyi", "sixfold_pb2_grpc.py"):
        fresh = (tmp_path / "sixfold" / "rpc" / name).read_text()
        committed = (RPC_DIR / name).read_text()
        assert fresh == committed, f"sixfold/rpc/{name} is out of date: run `make proto`"
