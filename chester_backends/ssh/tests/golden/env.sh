# chester: sourced before each run of this sweep
export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"
if [ -f '/home/me/my proj/.venv/bin/activate' ]; then . '/home/me/my proj/.venv/bin/activate'; fi
export ODD='it'"'"'s $(x) `y`'
export WANDB_MODE=offline
module load cuda
ulimit -n 4096
if [ -f '/home/me/my proj/prepare.sh' ]; then . '/home/me/my proj/prepare.sh'; fi
:
