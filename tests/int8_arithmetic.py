"""Whether this CPU's int8 convolutions and fully connected ops are exact.

With VNNI (AVX512_VNNI, AVX_VNNI, AMX) oneDNN adds u8 x s8 products in int32:
exact, and the tests compare the regions with numpy references of exact
integer arithmetic.  Without it (AVX2, AVX512_CORE) both oneDNN versions in the
process (ours and MXNet's) add pairs of products in saturating 16 bits, or
halve the weights for int8 data (see the README): no exact reference
describes them, and the regions are checked against MXNet's own ops, whose
bits they give there too.  ONEDNN_MAX_CPU_ISA (ours) and DNNL_MAX_CPU_ISA
(MXNet's) can take VNNI away from a CPU that has it.
"""
import os

_VNNI_FLAGS = {'avx512_vnni', 'avx_vnni', 'amx_int8'}
_CAPS_WITHOUT_VNNI = {'SSE41', 'AVX', 'AVX2', 'AVX512_CORE'}


def cpu_flags():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def _capped_below_vnni():
    caps = (os.environ.get(name, '').upper() for name in ('ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA'))
    return any(cap in _CAPS_WITHOUT_VNNI for cap in caps)


EXACT = bool(cpu_flags() & _VNNI_FLAGS) and not _capped_below_vnni()
WHY_NOT_EXACT = ('without VNNI oneDNN int8 convolutions and inner products are not exact '
                 'integer arithmetic (saturating 16-bit pairs, halved weights): the region '
                 'is checked against MXNet\'s own ops instead')
