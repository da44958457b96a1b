"""Regenerate ``fedge/v1/`` from every ``protos/fedge/v1/*.proto`` (grpcio-tools + mypy-protobuf).

Usage: ``python scripts/gen_protos.py [--out DIR]``. The proto path equals the Python import
path, so ``protos/fedge/v1/x.proto`` becomes ``DIR/fedge/v1/x_pb2.py`` (plus ``x_pb2_grpc.py``
and ``.pyi`` stubs). ``DIR`` defaults to the repository root; the staleness test generates into
a temporary directory and compares.
"""

import argparse
import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = Path("fedge") / "v1"

__all__ = ["generate", "main"]


def generate(out: Path) -> list[Path]:
    """Generate code for every proto under ``protos/fedge/v1`` into ``out``; return the files."""
    protos = sorted((PROTO_ROOT / PACKAGE).glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files in {PROTO_ROOT / PACKAGE}")
    plugin = shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent))
    plugin_grpc = shutil.which("protoc-gen-mypy_grpc", path=str(Path(sys.executable).parent))
    if plugin is None or plugin_grpc is None:
        raise SystemExit("mypy-protobuf is not installed next to this Python (pip install it)")
    (out / PACKAGE).mkdir(parents=True, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={plugin}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_grpc}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    init = out / PACKAGE / "__init__.py"
    init.write_text(
        '"""Generated protobuf and gRPC code (scripts/gen_protos.py); do not edit."""\n'
    )
    return sorted(p for p in (out / PACKAGE).iterdir() if p.is_file())


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: repo)")
    files = generate(parser.parse_args().out)
    print(f"generated {len(files)} files")


if __name__ == "__main__":
    main()
