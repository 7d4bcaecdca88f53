set -e
export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"
if [ -f pyproject.toml ]; then uv sync; fi
echo prepared
#--- env.sh
export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"
#--- worker
["uv", "run", "python", "-m", "chester.worker"]
