"""The module bundle's finder and loader on the host: modules keep their real files, and envd outside an image
does not look for a bundle. (envd from the real system image: tests/sysimage/test_module_bundle.py.)

Each case runs in a fresh interpreter, so this test process's imports stay as they are.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

# A package with a submodule, a data file and distribution metadata, written under <tree>/site.
PACKAGE = {
    "site/bundled_pkg/__init__.py": "from . import sub\n",
    "site/bundled_pkg/sub.py": "def fail():\n    raise ValueError('from sub')\n",
    "site/bundled_pkg/data.txt": "hello from a file\n",
    "site/bundled_pkg/later.py": "VALUE = 1\n",  # not bundled: imported only in the second interpreter
    "site/bundled_pkg-1.2.3.dist-info/METADATA": "Metadata-Version: 2.1\nName: bundled_pkg\nVersion: 1.2.3\n",
}

# Builds the bundle where the tree was compiled (`argv[1]`), as the image build does.
WRITE = r"""
import sys
sys.path.insert(0, sys.argv[1] + "/site")
import bundled_pkg
from sandhive.envd import module_bundle, module_bundle_writer
entries = module_bundle_writer.collect(dict(sys.modules), sys.argv[1])
open(sys.argv[2], "wb").write(module_bundle.encode(entries, "test-key"))
print(sorted(entries))
"""

# Loads from the bundle in a moved copy of the tree (`argv[1]`), as envd does from a mounted image.
LOAD = r"""
import importlib.metadata, importlib.resources, json, sys, traceback
from importlib.machinery import PathFinder
sys.path.insert(0, sys.argv[1] + "/site")
from sandhive.envd.module_bundle import BundleFinder
finder = BundleFinder.load(sys.argv[2], sys.argv[1])
sys.meta_path.insert(sys.meta_path.index(PathFinder), finder)
import bundled_pkg, bundled_pkg.later
try:
    bundled_pkg.sub.fail()
except ValueError as exc:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
print(json.dumps({
    "loaders": {m: type(sys.modules[m].__spec__.loader).__name__ for m in ("bundled_pkg", "bundled_pkg.sub",
                                                                           "bundled_pkg.later")},
    "files": [bundled_pkg.__file__, bundled_pkg.sub.__file__], "path": list(bundled_pkg.__path__),
    "cached": bundled_pkg.sub.__spec__.cached, "left": len(finder),
    "data": importlib.resources.files("bundled_pkg").joinpath("data.txt").read_text(),
    "get_data": bundled_pkg.__spec__.loader.get_data(sys.argv[1] + "/site/bundled_pkg/data.txt").decode(),
    "version": importlib.metadata.version("bundled_pkg"),
    "traceback": [frame.filename, frame.line],
}))
"""


def python(*args: str) -> str:
    return subprocess.run([sys.executable, "-I", "-B", *args], capture_output=True, text=True, check=True).stdout


def test_bundled_modules_keep_their_real_files(tmp_path: Path) -> None:
    built, moved, bundle = tmp_path / "built", tmp_path / "moved", tmp_path / "bundle.marshal"
    for name, text in PACKAGE.items():
        (built / name).parent.mkdir(parents=True, exist_ok=True)
        (built / name).write_text(text)
    src = str(Path(__file__).resolve().parents[2] / "src")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(built)], check=True)
    written = python("-c", f"import sys; sys.path.insert(0, {src!r})\n{WRITE}", str(built), str(bundle))
    assert written.strip() == "['bundled_pkg', 'bundled_pkg.sub']"
    shutil.copytree(built, moved)  # the image is built in one place and mounted in another
    shutil.rmtree(built)

    out = json.loads(python("-c", f"import sys; sys.path.insert(0, {src!r})\n{LOAD}", str(moved), str(bundle)))
    site = moved / "site/bundled_pkg"
    assert out["loaders"] == {"bundled_pkg": "BundleLoader", "bundled_pkg.sub": "BundleLoader",
                              "bundled_pkg.later": "SourceFileLoader"}
    assert out["files"] == [str(site / "__init__.py"), str(site / "sub.py")]
    assert out["path"] == [str(site)]
    assert out["cached"] == str(site / "__pycache__/sub.cpython-311.pyc")
    assert out["left"] == 0  # entries are dropped once served
    assert out["data"] == out["get_data"] == "hello from a file\n"
    assert out["version"] == "1.2.3"
    # The code was compiled under `built`; tracebacks name (and show) the file where it is now.
    assert out["traceback"] == [str(site / "sub.py"), "raise ValueError('from sub')"]


def test_envd_outside_an_image_imports_as_usual() -> None:
    """envd run from a source tree or venv (development, the host's tests) has no bundle and says nothing."""
    proc = subprocess.run(
        [sys.executable, "-I", "-B", "-c",
         "import sys, sandhive.envd.__main__ as m, sandhive.envd.module_bundle as b\n"
         "print(b.image_root(), [type(f).__name__ for f in sys.meta_path if isinstance(f, b.BundleFinder)],"
         " type(sys.modules['uvicorn'].__spec__.loader).__name__)"],
        capture_output=True, text=True, check=True)
    assert (proc.stdout, proc.stderr) == ("None [] SourceFileLoader\n", "")
