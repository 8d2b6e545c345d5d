# training-step A/B on the device: per-chip batch and round rematerialisation (sa1b_vitb, full 11 rounds)
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $OUT/run10.log
python3 -c "import jax; print(jax.__version__, jax.devices())" 2>&1 | tail -1 | tee -a $OUT/run10.log
timeout ${T1:-330} python3 -m benchmarks.train_ab --experiment sa1b_vitb --steps ${STEPS:-10} \
  --variant "b2_remat=--config.data.batch_size=2 --config.prompts.remat_rounds=True" \
  --variant "b2=--config.data.batch_size=2 --config.prompts.remat_rounds=False" \
  --variant "b4_remat=--config.data.batch_size=4 --config.prompts.remat_rounds=True" \
  --json $OUT/run10_ab.json $EXTRA 2>&1 | grep -v "Delay kernel\|DeprecationWarning\|stats = " | tee -a $OUT/run10.log
