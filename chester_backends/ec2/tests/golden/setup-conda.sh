set -e
cd .
if [ -f environment.yml ]; then
  if ! command -v conda >/dev/null 2>&1; then
    echo "chester: package_manager is conda but conda is not on PATH on $(hostname) (set conda_command, or package_manager: python)" >&2; exit 5
  fi
  conda env update -q -n 'my env' -f environment.yml --prune >&2 || { echo "chester: conda env update failed on $(hostname)" >&2; exit 5; }
fi
eval "$(conda shell.posix activate 'my env')"
echo prepared
#--- env.sh
eval "$(conda shell.posix activate 'my env')"
#--- worker
["python", ".chester/runtime/RUNTIME.pyz", "worker"]
