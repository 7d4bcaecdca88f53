set -e
eval "$(conda shell.bash hook)"
conda activate 'my env'
if [ -f environment.yml ]; then conda env update --prune -f environment.yml; fi
echo prepared
#--- env.sh
eval "$(conda shell.bash hook)"
conda activate 'my env'
#--- worker
["python", "-m", "chester.worker"]
