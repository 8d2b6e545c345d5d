# driver: encoder GELU x XLA flags (separate processes), then decoder old/new layout alternating
T=${TINY:-}
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p $OUT; ROOT=$PWD; rm -rf .gpu/old/benchmarks; cp -r benchmarks .gpu/old/
for flags in "" "--xla_gpu_enable_cublaslt=true"; do
  XLA_FLAGS="$flags" timeout 200 python3 .gpu/run9.py vit_h $T 2>&1 | grep -v "Delay kernel\|DeprecationWarning\|stats = " | tee -a $OUT/run9.log
done
for tree in new old new old; do
  if [ $tree = old ]; then D=$ROOT/.gpu/old; else D=$ROOT; fi
  echo "== decoder tree=$tree" | tee -a $OUT/run9.log
  (cd $D && PYTHONPATH=/tmp/site:$D timeout 150 python3 -c "import samjax.models.sam as s; print(s.__file__)
import sys; sys.argv=['x','--sections','decoder']+sys.argv[1:]
from benchmarks import device; device.main()" $T 2>&1 | grep "^\[decoder\]\|sam.py" | tee -a $OUT/run9.log)
done
