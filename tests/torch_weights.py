"""Loading `torch.nn` Transformer weights into kzoo's blocks (numerics tests)."""


def load_torch_attention(layer, mha):
    """Copy a `torch.nn.MultiheadAttention` (equal q/k/v widths) into `layer`."""
    w = mha.in_proj_weight.detach().numpy()
    b = mha.in_proj_bias.detach().numpy()
    d = w.shape[1]
    heads, dim = layer.num_heads, d // layer.num_heads
    weights = []
    for i in range(3):  # query, key, value rows of in_proj
        rows = slice(i * d, (i + 1) * d)
        weights += [w[rows].T.reshape(d, heads, dim), b[rows].reshape(heads, dim)]
    weights += [
        mha.out_proj.weight.detach().numpy().T.reshape(heads, dim, d),
        mha.out_proj.bias.detach().numpy(),
    ]
    layer.set_weights(weights)


def _dense(layer, linear):
    layer.set_weights([linear.weight.detach().numpy().T, linear.bias.detach().numpy()])


def _norm(layer, norm):
    layer.set_weights([norm.weight.detach().numpy(), norm.bias.detach().numpy()])


def _self_attention(block, torch_layer):
    load_torch_attention(block.self_attention, torch_layer.self_attn)
    _norm(block.self_attention_norm, torch_layer.norm1)


def _feed_forward(block, torch_layer, norm):
    _dense(block.ff_dense_1, torch_layer.linear1)
    _dense(block.ff_dense_2, torch_layer.linear2)
    _norm(block.ff_norm, norm)


def load_torch_encoder_layer(block, torch_layer):
    _self_attention(block, torch_layer)
    _feed_forward(block, torch_layer, torch_layer.norm2)


def load_torch_decoder_layer(block, torch_layer):
    _self_attention(block, torch_layer)
    load_torch_attention(block.cross_attention, torch_layer.multihead_attn)
    _norm(block.cross_attention_norm, torch_layer.norm2)
    _feed_forward(block, torch_layer, torch_layer.norm3)


def load_torch_transformer(model, transformer, *, swap_final_norms=False):
    """Copy a `torch.nn.Transformer`'s stacks and final norms into a kzoo `transformer`
    built with `final_norms=True` (embeddings and head are kzoo's own).

    `swap_final_norms=True` loads the encoder's final norm into the decoder's and
    back: a deliberately wrong mapping for the tests.
    """
    for block, layer in zip(model.encoder_blocks, transformer.encoder.layers, strict=True):
        load_torch_encoder_layer(block, layer)
    for block, layer in zip(model.decoder_blocks, transformer.decoder.layers, strict=True):
        load_torch_decoder_layer(block, layer)
    norms = (transformer.encoder.norm, transformer.decoder.norm)
    if swap_final_norms:
        norms = norms[::-1]
    _norm(model.encoder_norm, norms[0])
    _norm(model.decoder_norm, norms[1])
