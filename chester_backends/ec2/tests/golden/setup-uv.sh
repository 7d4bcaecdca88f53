set -e
cd .
export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"
if [ -f pyproject.toml ]; then
  if ! command -v uv >/dev/null 2>&1; then
    echo "chester: package_manager is uv but uv is not on PATH on $(hostname) (install uv there, or set package_manager: python)" >&2; exit 5
  fi
  uv sync -q >&2 || { echo "chester: uv sync failed on $(hostname)" >&2; exit 5; }
fi
export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
echo prepared
#--- env.sh
export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
#--- worker
["python", ".chester/runtime/RUNTIME.pyz", "worker"]
