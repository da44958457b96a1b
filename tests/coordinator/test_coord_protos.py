"""The committed ``fedge/v1`` code is what ``scripts/gen_protos.py`` generates now."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    generated = _generator().generate(tmp_path)  # type: ignore[attr-defined]
    names = {p.name for p in generated}
    for proto in (ROOT / "protos" / "fedge" / "v1").glob("*.proto"):
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"):
            assert f"{proto.stem}{suffix}" in names
    committed = ROOT / "fedge" / "v1"
    stale = [
        p.name
        for p in generated
        if not (committed / p.name).is_file() or (committed / p.name).read_bytes() != p.read_bytes()
    ]
    assert not stale, f"run `make protos`: stale or missing {stale}"
    extra = {p.name for p in committed.glob("*_pb2*.py*")} - names
    assert not extra, f"generated files without a .proto: {sorted(extra)}"
