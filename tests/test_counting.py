"""FLOP and byte formulas, checked against hand-computed values."""

from genprof.profiler import counting


def test_linear_flops_are_2mnk():
    flops, nbytes = counting.count("aten::linear", [[3, 5, 16], [32, 16], [32]], ["float"] * 3, [])
    assert flops == 2 * 15 * 32 * 16
    assert nbytes == 4 * (3 * 5 * 16 + 32 * 16 + 32 + 15 * 32)


def test_matmul_broadcasts_batch_dims():
    flops, _ = counting.count("aten::matmul", [[2, 4, 64, 16], [2, 4, 16, 32]], ["float"] * 2, [])
    assert flops == 2 * 8 * 64 * 32 * 16


def test_conv2d_uses_stride_and_padding():
    # input 2x4x16x16, weight 8x4x3x3, stride 2, padding 1 -> output 2x8x8x8
    flops, nbytes = counting.count("aten::conv2d", [[2, 4, 16, 16], [8, 4, 3, 3], [8], [], [], [], []],
                                   ["float"] * 3, [None, None, None, [2, 2], [1, 1], [1, 1], 1])
    assert flops == 2 * 2 * 8 * 8 * 8 * 4 * 9
    assert nbytes == 4 * (2 * 4 * 16 * 16 + 8 * 4 * 9 + 8 + 2 * 8 * 8 * 8)


def test_conv2d_same_padding_and_groups():
    flops, _ = counting.count("aten::conv2d", [[1, 8, 10, 10], [8, 2, 3, 3], [], [], [], [], []],
                              ["float"] * 2, [None, None, None, [1, 1], "same", [1, 1], 4])
    assert flops == 2 * 1 * 8 * 100 * 2 * 9


def test_transposed_conv_counts_input_positions():
    flops, _ = counting.count("aten::conv_transpose2d", [[1, 4, 8, 8], [4, 6, 2, 2], [6]],
                              ["float"] * 3, [None, None, None, [2, 2], [0, 0], [0, 0], 1, [1, 1]])
    assert flops == 2 * 1 * 64 * 4 * 6 * 4


def test_sdpa_is_4bhlqlkd_and_seq_lengths():
    shapes = [[2, 8, 100, 64], [2, 8, 77, 64], [2, 8, 77, 64]]
    flops, _ = counting.count("aten::_scaled_dot_product_flash_attention_for_cpu", shapes, ["float"] * 3, [])
    assert flops == 4 * 2 * 8 * 100 * 77 * 64
    assert counting.attention_dims("aten::scaled_dot_product_attention", shapes) == {
        "seq_q": 100, "seq_kv": 77, "batch_heads": 16, "head_dim": 64}


def test_flash_attn_package_layout_is_blhd():
    shapes = [[2, 100, 8, 64], [2, 77, 8, 64], [2, 77, 8, 64]]
    flops, _ = counting.count("flash_attn::_flash_attn_forward", shapes, ["c10::Half"] * 3, [])
    assert flops == 4 * 2 * 8 * 100 * 77 * 64


def test_views_move_no_bytes():
    assert counting.count("aten::view", [[4, 4], []], ["float"], [None, [16]]) == (0, 0)


def test_elementwise_bytes_read_inputs_and_write_broadcast_output():
    flops, nbytes = counting.count("aten::add", [[4, 1], [1, 8]], ["float", "float"], [])
    assert flops == 0
    assert nbytes == 4 * (4 + 8 + 32)


def test_type_as_copies_the_first_tensor_only_when_the_dtypes_differ():
    shapes = [[1, 75600, 5120], [1, 75600, 40, 128]]  # Wan's attention output, cast like the query
    assert counting.count("aten::type_as", shapes, ["c10::BFloat16", "c10::BFloat16"], []) == (0, 0)
    assert counting.count("aten::type_as", shapes, ["float", "c10::BFloat16"], []) == (0, 75600 * 5120 * (4 + 2))


def test_shapes_that_do_not_broadcast_write_the_first_shape():
    flops, nbytes = counting.count("aten::masked_fill", [[2, 3], [5]], ["float", "float"], [])
    assert nbytes == 4 * (6 + 5 + 6)
