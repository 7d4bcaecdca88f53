# chester: sourced before each run of this sweep
export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"
if [ -f /scratch/me/proj/.venv/bin/activate ]; then . /scratch/me/proj/.venv/bin/activate; fi
export OMP_NUM_THREADS=4
export ODD='$(whoami) `id`; echo '"'"'hi'"'"''
echo prepared
if [ -f /scratch/me/proj/prepare.sh ]; then . /scratch/me/proj/prepare.sh; fi
:
