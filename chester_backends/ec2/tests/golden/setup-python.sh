set -e
echo prepared
#--- env.sh

#--- worker
["python3", ".chester/runtime/RUNTIME.pyz", "worker"]
