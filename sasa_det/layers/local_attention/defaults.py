"""The SASA paper's values for its layer, the defaults of both :class:`~.layer.LocalSelfAttention2d` and
:class:`~.options.SasaOptions` (declared once, here)."""

#: window k (SASA Sec. 4.1: spatial extent k = 7 everywhere)
KERNEL_SIZE = 7
#: attention heads (SASA Sec. 4.1: 8)
HEADS = 8
#: the logits are not divided by sqrt(head width) (SASA Eq. 3 has no scaling)
SCALED = False
#: out-of-image keys and values are zeros that take part in the softmax (the paper is silent; public
#: reimplementations zero-pad)
MASK_PADDING = False
#: the implementation: the fastest registered one for the device
IMPL = "auto"
#: how the relative-embedding tables start (the paper gives no initialisation): "content_scale" draws them
#: N(0, 1), so that for unit-variance queries the relative logits q·r start with the content logits' spread
#: (variance d each); "inv_sqrt_d" draws them N(0, 1/d), the AA paper's appendix code, which starts the relative
#: logits sqrt(d) times narrower than the content logits (see docs/zoo.md)
REL_INITS = ("content_scale", "inv_sqrt_d")
REL_INIT = "content_scale"
