set -e
cd '/home/me/my proj'
export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"
if [ -f '/home/me/my proj/.venv/bin/activate' ]; then . '/home/me/my proj/.venv/bin/activate'; fi
setsid -f sh -c 'set -a; . '"'"'/home/me/my proj/.chester/sweeps/tok1.secrets'"'"'; set +a; rm -f '"'"'/home/me/my proj/.chester/sweeps/tok1.secrets'"'"'; exec /opt/py/bin/python3 '"'"'/home/me/my proj/.chester/runtime/RUNTIME.pyz'"'"' runner --max-parallel 2 --python /opt/py/bin/python3 --cwd '"'"'/home/me/my proj'"'"' --env-file '"'"'/home/me/my proj/.chester/sweeps/tok1.env'"'"' --slots-dir '"'"'/home/me/my proj/.chester/slots'"'"' --from-file '"'"'/home/me/my proj/.chester/sweeps/tok1.queue'"'"' --gpus 0,3' >>'/home/me/my proj/.chester/sweeps/tok1.log' 2>&1 </dev/null
echo chester-queue-started
