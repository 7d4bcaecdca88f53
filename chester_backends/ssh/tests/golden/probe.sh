cd '/home/me/my proj'
export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"
if [ -f pyproject.toml ]; then
  if ! command -v uv >/dev/null 2>&1; then
    echo "chester: package_manager is uv but uv is not on PATH on $(hostname) (install uv there, or set package_manager: python)" >&2; exit 5
  fi
  uv sync -q >&2 || { echo "chester: uv sync failed on $(hostname)" >&2; exit 5; }
fi
cd '/home/me/my proj'
export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"
if [ -f '/home/me/my proj/.venv/bin/activate' ]; then . '/home/me/my proj/.venv/bin/activate'; fi
if [ -f '/home/me/my proj/.chester/runtime/RUNTIME.pyz' ]; then echo 'chester-probe runtime=1'; else echo 'chester-probe runtime=0'; fi
if command -v /opt/py/bin/python3 >/dev/null 2>&1; then /opt/py/bin/python3 -c 'exec("import os, sys\nprint('"'"'chester-probe python=%d.%d.%d %s'"'"' % (sys.version_info[:3] + (sys.executable,)))\nrt = '"'"'/home/me/my proj/.chester/runtime/RUNTIME.pyz'"'"'\nif os.path.isfile(rt):\n    try:\n        sys.path.insert(0, rt)\n        import chester.worker\n        print('"'"'chester-probe import=ok'"'"')\n    except BaseException as e:\n        print('"'"'chester-probe import=%s: %s'"'"' % (type(e).__name__, str(e).replace('"'"'\\n'"'"', '"'"' '"'"')))")' || echo 'chester-probe python=broken'; else echo 'chester-probe python=missing'; fi
