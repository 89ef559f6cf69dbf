#!/bin/sh
# Run inside the builder stage of containers/Containerfile (not on a host).
#   venv.sh deps EXTRAS    the runtime dependencies of edge-runtime[EXTRAS] into the venv
#   venv.sh app IMAGE      the project itself; then prune (pip, tests, caches), strip shared
#                          objects, precompile, and write /out/image.json with a digest over
#                          everything under /opt/edge-runtime
set -eu
APP=/opt/edge-runtime
VENV=$APP/venv
PIP="$VENV/bin/python -m pip --no-cache-dir --disable-pip-version-check --quiet"
# containers/build mounts the host's CA bundle here for the build steps (never in an image)
[ -f /run/build-ca.crt ] && export PIP_CERT=/run/build-ca.crt

case $1 in
deps)
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # the requirements of the project and the chosen extras, read from pyproject.toml
  "$VENV/bin/python" - "${2:-}" >/tmp/requirements.txt <<'PY'
import sys, tomllib
project = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]
reqs = list(project["dependencies"])
for extra in filter(None, sys.argv[1].split(",")):
    reqs += project["optional-dependencies"][extra]
print("\n".join(reqs))
PY
  $PIP install -r /tmp/requirements.txt
  ;;
app)
  $PIP install --no-deps /src
  $PIP uninstall -y pip setuptools wheel
  rm -f "$VENV"/bin/activate* "$VENV"/bin/Activate.ps1
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # tests, type stubs and C headers of the dependencies are not needed to run
  find "$site" -depth \( -type d \( -name tests -o -name __pycache__ \
        -o -name include \) -o -type f \( -name '*.pyi' -o -name '*.pxd' -o -name '*.c' \
        -o -name '*.h' -o -name '*.pyx' \) \) -exec rm -rf {} +
  # debug symbols of extension modules; the libraries auditwheel vendored (in *.libs) are
  # patched ELF files that strip breaks, so they are left alone
  find "$site" -type f -name '*.so' ! -path '*.libs/*' -exec strip --strip-unneeded {} + 2>/dev/null || true
  # bytecode made now (the root is read-only at run time), checked by hash not mtime
  "$VENV/bin/python" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$site" >/dev/null
  # a smoke test of what the image runs, with the modules it needs
  case $2 in
    site) check="import edge_runtime.cli, edge_runtime.runtime.site, numpy, uvloop" ;;
    site-video) check="import edge_runtime.runtime.site, numpy, onnxruntime, cv2" ;;
    core) check="import edge_runtime.core, nats" ;;
    *) echo "venv.sh: unknown image $2" >&2; exit 2 ;;
  esac
  "$VENV/bin/python" -c "$check"
  version=$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("edge-runtime"))')
  # the digest of the installed tree: every file's path and contents, bytecode left out
  digest=$(cd "$APP" && find . -type f ! -name '*.pyc' -print0 | LC_ALL=C sort -z |
           xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
  mkdir -p /out
  printf '{"version": "%s", "digest": "sha256:%s", "built": "%s", "image": "%s"}\n' \
    "$version" "$digest" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$2" >/out/image.json
  cat /out/image.json
  ;;
*) echo "usage: venv.sh deps EXTRAS | app IMAGE" >&2; exit 2 ;;
esac
