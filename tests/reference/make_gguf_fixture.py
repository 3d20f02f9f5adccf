#!/usr/bin/env python3
# make_gguf_fixture.py - writes tests/fixtures/quant/quant.gguf, the fixture
# for tests/test_gguf.c: one small tensor per ggml type we dequantise, each
# followed by "<name>.expected" (F32) holding gguf-py's own dequantisation,
# plus metadata of every value type. Run from the repository root:
#   python3 tests/reference/make_gguf_fixture.py
# Needs the `gguf` and `numpy` packages (only to regenerate; the C test reads
# the committed file).
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

OUT = os.path.join("tests", "fixtures", "quant", "quant.gguf")
ROWS, COLS = 2, 256
rng = np.random.default_rng(20250611)


def f16_bytes(vals):
    return np.asarray(vals, dtype=np.float16).view(np.uint8)


def random_kquant(qtype, n_blocks):
    """Random block bytes for a K-quant (gguf-py has no K-quant quantiser):
    arbitrary scale/quant bytes, with the fp16 super-block scales set to sane
    finite values so the expected output has no inf/nan."""
    _, size = gguf.GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    d = rng.uniform(0.001, 0.05, size=n_blocks) * rng.choice([-1, 1], size=n_blocks)
    dmin = rng.uniform(0.001, 0.05, size=n_blocks)
    if qtype == T.Q2_K:    # scales[16] qs[64] d dmin
        b[:, 80:82] = f16_bytes(d).reshape(n_blocks, 2)
        b[:, 82:84] = f16_bytes(dmin).reshape(n_blocks, 2)
    elif qtype == T.Q3_K:  # hmask[32] qs[64] scales[12] d
        b[:, 108:110] = f16_bytes(d).reshape(n_blocks, 2)
    elif qtype in (T.Q4_K, T.Q5_K):  # d dmin scales[12] ...
        b[:, 0:2] = f16_bytes(d).reshape(n_blocks, 2)
        b[:, 2:4] = f16_bytes(dmin).reshape(n_blocks, 2)
    elif qtype == T.Q6_K:  # ql[128] qh[64] scales[16] d
        b[:, 208:210] = f16_bytes(d).reshape(n_blocks, 2)
    return b


def main():
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    w = gguf.GGUFWriter(OUT, "testarch")
    w.add_custom_alignment(64)
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 1.5)
    w.add_bool("test.bool", True)
    w.add_string("test.str", "hello gguf \u00e9")
    w.add_uint64("test.u64", 18000000000000000000)
    w.add_int64("test.i64", -9000000000000000000)
    w.add_float64("test.f64", 2.718281828459045)
    w.add_array("test.strs", ["alpha", "", "gamma \u03b3"])
    w.add_array("test.ints", [1, 2, 3, 4])
    w.add_array("test.nested", [[1, 2], [3], ["x", "yz"]])
    w.add_key_value("test.nested_strs", [["a", "bc"], ["def"]], gguf.GGUFValueType.ARRAY,
                    sub_type=gguf.GGUFValueType.ARRAY)
    w.add_uint32("llama.block_count", 3)

    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    tensors = []
    # F32 with an odd 3-D shape: ne = [32, 3, 2].
    tensors.append(("f32_3d", rng.standard_normal((2, 3, 32)).astype(np.float32), T.F32))
    tensors.append(("f32", x, T.F32))
    xf16 = x.copy()
    xf16[0, :4] = [1e-6, -3e-7, 0.0, -0.0]  # fp16 subnormals and signed zero
    tensors.append(("f16", quantize(xf16, T.F16), T.F16))
    tensors.append(("bf16", quantize(x, T.BF16), T.BF16))
    for name, qt in (("q4_0", T.Q4_0), ("q4_1", T.Q4_1), ("q5_0", T.Q5_0), ("q5_1", T.Q5_1),
                     ("q8_0", T.Q8_0)):
        tensors.append((name, quantize(x, qt), qt))
    for name, qt in (("q2_k", T.Q2_K), ("q3_k", T.Q3_K), ("q4_k", T.Q4_K), ("q5_k", T.Q5_K),
                     ("q6_k", T.Q6_K)):
        blck, size = gguf.GGML_QUANT_SIZES[qt]
        nb = COLS // blck
        tensors.append((name, random_kquant(qt, ROWS * nb).reshape(ROWS, nb * size), qt))

    for name, data, qt in tensors:
        if qt == T.F32:
            w.add_tensor(name, data)
            expected = data
        else:
            data = np.ascontiguousarray(data).view(np.uint8)
            w.add_tensor(name, data, raw_dtype=qt)
            expected = dequantize(data, qt)
        assert np.all(np.isfinite(expected)), name
        w.add_tensor(name + ".expected", np.ascontiguousarray(expected, dtype=np.float32))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {2 * len(tensors)} tensors)")


if __name__ == "__main__":
    main()
