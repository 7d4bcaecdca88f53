set -e
echo prepared
#--- env.sh

#--- worker
["python3", "-m", "chester.worker"]
