"""The operators an uploaded teacher may call: pure tensor computation, nothing else.

A positive allowlist, built from what the project's architectures and torchvision's compile to
(scripted, traced and ``torch.export``-ed: see tests/core/test_opcheck.py) and widened to the
neighbouring pure operators a hand-written model commonly uses. Everything else is refused:
operators that touch files (``aten::from_file``), print, fork, talk to other processes
(``rpc``/``c10d``), reach raw memory (``set_``, ``as_strided``, ``data_ptr``), and every
namespace but ``aten`` and ``prim`` (custom operators registered by extensions).

Torch-free: the API checks uploads with it, the engine checks loaded programs with it.
"""

from __future__ import annotations

from core.errors import UnsafeModelError

_ARITHMETIC = """
abs absolute acos acosh add addcdiv addcmul addmm addmv addbmm asin asinh atan atan2 atanh baddbmm
bitwise_and bitwise_not bitwise_or bitwise_xor ceil clamp clamp_max clamp_min clip copysign cos cosh
deg2rad div divide erf erfc erfinv exp exp2 expm1 fix floor floor_divide fmod frac hypot lerp lgamma
log log10 log1p log2 logaddexp logical_and logical_not logical_or logical_xor mul multiply nan_to_num
neg negative pow reciprocal remainder round rsqrt sgn sigmoid sign signbit sin sinc sinh sqrt square
sub subtract rsub tan tanh true_divide trunc xlogy float_power maximum minimum fmax fmin
eq ne lt le gt ge equal isclose allclose isfinite isinf isnan isneginf isposinf isreal where
"""
_LINEAR_ALGEBRA = """
matmul mm bmm mv dot vdot linear bilinear einsum outer ger tensordot addr cross kron
"""
_LAYERS = """
conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d _convolution convolution
_convolution_mode conv_tbc max_pool1d max_pool2d max_pool3d max_pool1d_with_indices
max_pool2d_with_indices max_pool3d_with_indices avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d
adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d
_adaptive_avg_pool2d lp_pool1d lp_pool2d batch_norm _native_batch_norm_legit
_native_batch_norm_legit_no_training native_batch_norm instance_norm layer_norm native_layer_norm
group_norm native_group_norm rms_norm local_response_norm embedding embedding_bag
scaled_dot_product_attention _scaled_dot_product_flash_attention_for_cpu pixel_shuffle
pixel_unshuffle channel_shuffle native_channel_shuffle upsample_nearest1d upsample_nearest2d
upsample_nearest3d upsample_bilinear2d upsample_bicubic2d upsample_linear1d upsample_trilinear3d
_upsample_nearest_exact2d _upsample_bilinear2d_aa interpolate grid_sampler grid_sampler_2d
affine_grid_generator pad constant_pad_nd reflection_pad1d reflection_pad2d replication_pad1d
replication_pad2d replication_pad3d im2col col2im unfold fold cosine_similarity pairwise_distance cdist
pdist
"""
_ACTIVATIONS = """
relu relu6 leaky_relu elu selu celu gelu silu mish hardswish hardsigmoid hardtanh hardshrink softshrink
tanhshrink softplus softsign prelu _prelu_kernel rrelu glu logsigmoid threshold softmax log_softmax
_softmax _log_softmax softmin
"""
_DROPOUT_AND_RANDOM = """
dropout feature_dropout alpha_dropout feature_alpha_dropout native_dropout bernoulli rand rand_like
randn randn_like randint randint_like randperm normal uniform multinomial
"""
_SHAPES = """
view view_as reshape reshape_as flatten unflatten squeeze unsqueeze permute transpose t mT T
contiguous expand expand_as broadcast_to broadcast_tensors repeat repeat_interleave tile cat concat
concatenate stack hstack vstack dstack split split_with_sizes tensor_split chunk unbind narrow select
slice index index_select gather scatter scatter_add scatter_reduce index_add index_copy index_fill
index_put masked_fill masked_scatter masked_select take take_along_dim roll flip fliplr flipud rot90
movedim moveaxis swapaxes swapdims diagonal diag diag_embed tril triu triu_indices tril_indices
nonzero argwhere _unsafe_view alias lift_fresh lift_fresh_copy _reshape_alias unsafe_split
unsafe_chunk meshgrid cartesian_prod combinations numel size stride dim sym_size sym_stride
sym_numel sym_storage_offset _shape_as_tensor
"""
_REDUCTIONS = """
sum mean prod max min amax amin aminmax argmax argmin std var std_mean var_mean norm
linalg_vector_norm frobenius_norm nuclear_norm logsumexp median nanmedian mode all any count_nonzero
cumsum cumprod cummax cummin logcumsumexp sort argsort topk kthvalue unique_consecutive
_unique2 bincount histc bucketize searchsorted renorm nansum nanmean one_hot
"""
_CREATION_AND_TYPES = """
to type_as cpu cuda float double half bfloat16 int long short char byte bool clone detach detach_
copy copy_ zeros zeros_like ones ones_like full full_like empty empty_like new_empty new_zeros
new_ones new_full new_tensor empty_strided scalar_tensor tensor as_tensor arange linspace logspace
eye fill fill_ zero_ complex real imag view_as_real view_as_complex _to_copy _assert_tensor_metadata
item _local_scalar_dense is_floating_point is_complex is_nonzero requires_grad_ result_type
can_cast promote_types
"""
# TorchScript's builtins on Python values (ints, floats, strings, lists, dicts) and its checks.
_SCRIPT_VALUES = """
Int Float Bool ScalarImplicit IntImplicit FloatImplicit ComplexImplicit str len list append extend
insert pop remove clear reverse count __getitem__ _set_item __contains__ __is__ __isnot__ __not__
__and__ __or__ __xor__ __lshift__ __rshift__ __round_to_zero_floordiv __interpolate floordiv
__range_length __derive_index format join split strip lower upper startswith endswith keys values
items get setdefault dict __iand__ __ior__ __ixor__ __ilshift__ __irshift__ __iadd__ sorted
_assert _assert_async _assert_scalar sym_constrain_range sym_constrain_range_for_size
_assert_tensor_metadata device dtype layout is_contiguous sym_not sym_float sym_int
sym_max sym_min sym_ite sym_sqrt
"""
_PRIM = """
Constant GetAttr SetAttr CallMethod CallFunction If Loop ListConstruct ListUnpack TupleConstruct
TupleUnpack TupleIndex TupleSlice DictConstruct DictIndex NumToTensor RaiseException unchecked_cast
unchecked_unwrap_optional Uninitialized device dtype layout isinstance is_cuda is_cpu is_sparse
is_quantized is_meta is_mkldnn is_xpu is_nested requires_grad data shape min max abs
TypeCheck AutogradZero AutogradAdd ModuleContainerIndex EnumName EnumValue StringIndex
CreateObject Return
"""
# Names that are never allowed, even as the in-place twin of an allowed operator, kept apart so
# that an error can say "an operator that reads or writes files" rather than just "unknown".
SIDE_EFFECTS = {
    "aten::from_file": "reads and writes files",
    "aten::_nested_from_padded": "builds nested tensors from raw buffers",
    "aten::set_": "re-points a tensor at arbitrary storage",
    "aten::as_strided": "re-strides raw memory",
    "aten::data_ptr": "exposes memory addresses",
    "aten::warn": "writes to the worker's log",
    "aten::wait": "waits on forked work",
    "prim::Print": "writes to the worker's output",
    "prim::fork": "runs work asynchronously",
    "prim::PythonOp": "calls back into Python",
    "prim::Enter": "enters a context manager",
    "prim::Exit": "leaves a context manager",
}
ALLOWED_NAMESPACES = ("aten", "prim")


def _names(*blocks: str) -> frozenset[str]:
    return frozenset(name for block in blocks for name in block.split())


ATEN: frozenset[str] = _names(
    _ARITHMETIC,
    _LINEAR_ALGEBRA,
    _LAYERS,
    _ACTIVATIONS,
    _DROPOUT_AND_RANDOM,
    _SHAPES,
    _REDUCTIONS,
    _CREATION_AND_TYPES,
    _SCRIPT_VALUES,
)
PRIM: frozenset[str] = _names(_PRIM)


def refusal(op: str) -> str | None:
    """Why ``op`` (``namespace::name``, overload ignored) is refused, or None when it is allowed."""
    namespace, sep, name = op.partition("::")
    if not sep or not name:
        return "is not an operator name"
    name = name.split(".", 1)[0]  # "add.Tensor": the overload does not change what an op may do
    op = f"{namespace}::{name}"
    if op in SIDE_EFFECTS:
        return SIDE_EFFECTS[op]
    if namespace not in ALLOWED_NAMESPACES:
        return f"is a custom operator (namespace {namespace!r}); only aten and prim operators are allowed"
    allowed = ATEN if namespace == "aten" else PRIM
    if name in allowed:
        return None
    # "relu_" and "add_" are the in-place forms of allowed operators (and "__iadd__"-style names
    # are listed above); "set_" and "resize_" have no allowed out-of-place twin.
    if namespace == "aten" and name.endswith("_") and not name.startswith("_") and name[:-1] in allowed:
        return None
    return "is not in the allowlist of pure tensor operators"


def check_op(op: str, where: str) -> None:
    """``UnsafeModelError`` naming ``op`` and where it was found, unless it is allowed."""
    reason = refusal(op)
    if reason is not None:
        raise UnsafeModelError(f"the model calls {op} ({reason}) in {where}: refused")
