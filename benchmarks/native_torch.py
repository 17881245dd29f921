"""The benchmark cases written natively in PyTorch, layer for layer.

Each module has the same layer sizes as the kzoo model it is compared with;
the harness checks that the trainable parameter counts are equal.
"""

import math

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, in_features=784, hidden=(512, 512), num_classes=10):
        super().__init__()
        layers, width = [], in_features
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU()]
            width = units
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.flatten(1))


def conv_bn_relu(cin, cout, stride=1):
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class SimpleCNN(nn.Module):
    """Stages of (conv-BN-ReLU) x convs, max-pool; global average pool; dropout; head."""

    def __init__(self, in_channels=3, widths=(32, 64, 128), convs_per_stage=2, num_classes=10,
                 dropout=0.5):
        super().__init__()
        layers, cin = [], in_channels
        for width in widths:
            for _ in range(convs_per_stage):
                layers += conv_bn_relu(cin, width)
                cin = width
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, num_classes))

    def forward(self, x):  # x: (B, C, H, W)
        return self.head(self.features(x).mean(dim=(2, 3)))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:  # projection shortcut
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-6n+2 for 32x32 images: 3x3 stem, three stages of n basic blocks."""

    def __init__(self, blocks=(3, 3, 3), widths=(16, 32, 64), num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn_relu(3, widths[0]))
        layers, cin = [], widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths)):
            for j in range(n):
                layers.append(BasicBlock(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = width
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))


class RecurrentClassifier(nn.Module):
    """One LSTM/GRU layer, the last hidden state, a linear head."""

    def __init__(self, cell="lstm", features=16, units=128, num_classes=10):
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(features, units, batch_first=True)
        if cell == "lstm":
            # Keras' LSTM has one bias per gate, torch two (b_ih + b_hh): freeze
            # b_hh at zero so both compute and train the same function.
            with torch.no_grad():
                self.rnn.bias_hh_l0.zero_()
            self.rnn.bias_hh_l0.requires_grad_(False)
        self.head = nn.Linear(units, num_classes)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])



# === Transformer (kzoo `transformer`, post-norm, shared embeddings) ===
def sinusoidal_positions(length, d_model, base=10000.0):
    """`PE[pos, 2i] = sin(pos / base^(2i/d))`, `PE[pos, 2i+1] = cos(...)` (interleaved)."""
    positions = torch.arange(length, dtype=torch.float32)[:, None]
    rates = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32)
                      * (-math.log(base) / d_model))
    angles = positions * rates[None]
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(length, d_model)


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder Transformer: one embedding shared by source, target and
    the output projection (scaled by sqrt(d_model), sinusoidal positions),
    post-norm `nn.TransformerEncoderLayer` / `nn.TransformerDecoderLayer`
    stacks with no final norms (as kzoo's post-norm stacks), padding masks
    from `pad_id` 0 and a causal target mask. `nn.Transformer` itself is not
    used because it always adds a final norm to each stack (2 x 2 x d_model
    parameters that kzoo's post-norm model does not have)."""

    def __init__(self, vocab_size=1000, d_model=128, num_heads=4, num_encoder_layers=2,
                 num_decoder_layers=2, intermediate_dim=512, dropout=0.1, eps=1e-5):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.dropout = nn.Dropout(dropout)
        enc = nn.TransformerEncoderLayer(d_model, num_heads, intermediate_dim, dropout,
                                         batch_first=True, layer_norm_eps=eps)
        dec = nn.TransformerDecoderLayer(d_model, num_heads, intermediate_dim, dropout,
                                         batch_first=True, layer_norm_eps=eps)
        self.encoder = nn.TransformerEncoder(enc, num_encoder_layers, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec, num_decoder_layers)

    def embed(self, ids):
        x = self.embedding(ids) * math.sqrt(self.d_model)
        return self.dropout(x + sinusoidal_positions(ids.shape[1], self.d_model))

    def forward(self, source_ids, target_ids):
        source_pad, target_pad = source_ids == 0, target_ids == 0
        length = target_ids.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool).triu(1)  # True: may not attend
        memory = self.encoder(self.embed(source_ids), src_key_padding_mask=source_pad)
        y = self.decoder(self.embed(target_ids), memory, tgt_mask=causal, tgt_is_causal=True,
                         tgt_key_padding_mask=target_pad, memory_key_padding_mask=source_pad)
        return y @ self.embedding.weight.T  # tied output projection


# === Vision Transformer (kzoo `vit_tiny`: pre-norm, GELU, class token) ===
class ViT(nn.Module):
    def __init__(self, image_size=32, patch_size=4, channels=3, num_classes=10, hidden_dim=192,
                 num_heads=3, num_layers=12, mlp_dim=768, eps=1e-6):
        super().__init__()
        patches = (image_size // patch_size) ** 2
        self.patch_embedding = nn.Conv2d(channels, hidden_dim, patch_size, patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.position_embedding = nn.Parameter(0.02 * torch.randn(1, patches + 1, hidden_dim))
        layer = nn.TransformerEncoderLayer(hidden_dim, num_heads, mlp_dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True,
                                           layer_norm_eps=eps)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_dim, eps=eps)
        self.head = nn.Linear(hidden_dim, num_classes)

    def forward(self, x):  # x: (B, C, H, W)
        x = self.patch_embedding(x).flatten(2).transpose(1, 2)  # (B, patches, D), row-major
        x = torch.cat([self.class_token.expand(len(x), -1, -1), x], dim=1)
        x = self.encoder(x + self.position_embedding)
        return self.head(self.norm(x)[:, 0])


# === Generative cases: each twin owns its optimizers and its whole step ===
class DCGAN(nn.Module):
    """kzoo `dcgan`: the same layers, and the same simultaneous two-player step:
    D on real images, D on detached fakes (its loss), D on fakes for G's
    non-saturating loss (gradients to G only), one Adam per player."""

    def __init__(self, image_size=28, channels=1, latent_dim=64, filters=64, dropout=0.3):
        super().__init__()
        base, f = image_size // 4, filters
        self.latent_dim, self.base, self.filters = latent_dim, base, f
        self.g_project = nn.Sequential(nn.Linear(latent_dim, base * base * 2 * f, bias=False),
                                       nn.BatchNorm1d(base * base * 2 * f), nn.ReLU())
        self.g_convs = nn.Sequential(
            nn.ConvTranspose2d(2 * f, 2 * f, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * f),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * f, f, 4, 2, 1, bias=False), nn.BatchNorm2d(f), nn.ReLU(),
            nn.Conv2d(f, channels, 3, padding=1), nn.Tanh(),
        )
        self.discriminator = nn.Sequential(
            nn.Conv2d(channels, f, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(f, 2 * f, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * f), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(base * base * 2 * f, 1),
        )

    def generate(self, z):
        x = self.g_project(z).view(-1, 2 * self.filters, self.base, self.base)
        return (self.g_convs(x) + 1) / 2  # tanh output to [0, 1]

    def judge(self, images):
        return self.discriminator(images * 2 - 1)

    def make_optimizers(self):
        g_params = [*self.g_project.parameters(), *self.g_convs.parameters()]
        d_params = list(self.discriminator.parameters())
        self.players = (d_params, g_params)
        return [torch.optim.Adam(d_params, 2e-4, betas=(0.5, 0.999)),
                torch.optim.Adam(g_params, 2e-4, betas=(0.5, 0.999))]

    def train_step(self, x, y, optimizers):
        softplus = nn.functional.softplus
        z = torch.randn(len(x), self.latent_dim)
        real = self.judge(x)
        fake = self.generate(z)
        d_loss = softplus(-real).mean() + softplus(self.judge(fake.detach())).mean()
        g_loss = softplus(-self.judge(fake)).mean()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        d_params, g_params = self.players
        d_loss.backward(inputs=d_params)
        g_loss.backward(inputs=g_params)
        for opt in optimizers:
            opt.step()
        return d_loss + g_loss

    def infer_inputs(self, x):
        return torch.randn(len(x), self.latent_dim)

    def infer(self, z):
        return self.generate(z)


class ConvVAE(nn.Module):
    """kzoo `conv_vae`: the same encoder/decoder; the step is the negative ELBO
    (summed Bernoulli log-likelihood + KL, mean over the batch) and one Adam."""

    def __init__(self, image_size=28, channels=1, latent_dim=16, filters=32, hidden_units=256):
        super().__init__()
        base, f = image_size // 4, filters
        self.base, self.filters = base, f
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, f, 3, 2, 1), nn.ReLU(), nn.Conv2d(f, 2 * f, 3, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(base * base * 2 * f, hidden_units), nn.ReLU(),
        )
        self.z_mean = nn.Linear(hidden_units, latent_dim)
        self.z_log_var = nn.Linear(hidden_units, latent_dim)
        self.dec_dense = nn.Sequential(
            nn.Linear(latent_dim, hidden_units), nn.ReLU(),
            nn.Linear(hidden_units, base * base * 2 * f), nn.ReLU(),
        )
        self.dec_convs = nn.Sequential(
            nn.ConvTranspose2d(2 * f, 2 * f, 3, 2, 1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(2 * f, f, 3, 2, 1, output_padding=1), nn.ReLU(),
            nn.Conv2d(f, channels, 3, padding=1), nn.Sigmoid(),
        )

    def forward(self, x):
        h = self.encoder(x)
        mean, log_var = self.z_mean(h), self.z_log_var(h)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean) if self.training else mean
        h = self.dec_dense(z).view(-1, 2 * self.filters, self.base, self.base)
        return self.dec_convs(h), mean, log_var

    def make_optimizers(self):
        return [torch.optim.Adam(self.parameters(), 1e-3)]

    def train_step(self, x, y, optimizers):
        (opt,) = optimizers
        decoded, mean, log_var = self(x)
        decoded = decoded.clamp(1e-6, 1 - 1e-6)
        bce = -(x * decoded.log() + (1 - x) * (1 - decoded).log())
        kl = -0.5 * (1 + log_var - mean.square() - log_var.exp()).sum(1)
        loss = bce.flatten(1).sum(1).mean() + kl.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def infer(self, x):
        return self(x)[0]


def _groups(channels, groups=8):
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


class TimeResidualBlock(nn.Module):
    def __init__(self, cin, cout, time_dim, eps=1e-3):
        super().__init__()
        self.norm_1 = nn.GroupNorm(_groups(cin), cin, eps=eps)
        self.conv_1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_dense = nn.Linear(time_dim, cout)
        self.norm_2 = nn.GroupNorm(_groups(cout), cout, eps=eps)
        self.conv_2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, t_emb):
        silu = nn.functional.silu
        h = self.conv_1(silu(self.norm_1(x))) + self.time_dense(silu(t_emb))[:, :, None, None]
        return self.skip(x) + self.conv_2(silu(self.norm_2(h)))


class SpatialSelfAttention(nn.Module):
    def __init__(self, channels, num_heads=1, eps=1e-3):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels, eps=eps)
        self.attention = nn.MultiheadAttention(channels, num_heads, batch_first=True)

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        t, _ = self.attention(t, t, t, need_weights=False)
        return x + t.transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    """kzoo's DDPM U-Net (`kzoo.layers.unet.build_unet`), layer for layer."""

    def __init__(self, image_size=32, channels=3, filters=32, channel_multipliers=(1, 2, 2),
                 attention_resolutions=(4,)):
        super().__init__()
        self.filters, time_dim = filters, 4 * filters
        self.time_mlp = nn.Sequential(nn.Linear(filters, time_dim), nn.SiLU(),
                                      nn.Linear(time_dim, time_dim))
        self.stem = nn.Conv2d(channels, filters, 3, padding=1)
        self.down, self.pools = nn.ModuleList(), nn.ModuleList()
        cin, size, skip_widths = filters, image_size, []
        for level, mult in enumerate(channel_multipliers):
            blocks = [TimeResidualBlock(cin, filters * mult, time_dim)]
            cin = filters * mult
            if size in attention_resolutions:
                blocks.append(SpatialSelfAttention(cin))
            self.down.append(nn.ModuleList(blocks))
            skip_widths.append(cin)
            if level < len(channel_multipliers) - 1:
                self.pools.append(nn.Conv2d(cin, cin, 3, 2, 1))
                size //= 2
        self.mid_res_0 = TimeResidualBlock(cin, cin, time_dim)
        self.mid_attn = SpatialSelfAttention(cin)
        self.mid_res_1 = TimeResidualBlock(cin, cin, time_dim)
        self.up, self.up_convs = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(channel_multipliers))):
            width = filters * channel_multipliers[level]
            blocks = [TimeResidualBlock(cin + skip_widths[level], width, time_dim)]
            cin = width
            if size in attention_resolutions:
                blocks.append(SpatialSelfAttention(cin))
            self.up.append(nn.ModuleList(blocks))
            if level > 0:
                out = filters * channel_multipliers[level - 1]
                self.up_convs.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                   nn.Conv2d(cin, out, 3, padding=1)))
                cin, size = out, size * 2
        self.out = nn.Sequential(nn.GroupNorm(_groups(filters), filters, eps=1e-3), nn.SiLU(),
                                 nn.Conv2d(filters, channels, 3, padding=1))

    def time_features(self, t):
        half = self.filters // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        angles = t.float()[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def forward(self, x, t):
        t = self.time_mlp(self.time_features(t))
        x, skips = self.stem(x), []
        for i, blocks in enumerate(self.down):
            x = blocks[0](x, t)
            for attn in blocks[1:]:
                x = attn(x)
            skips.append(x)
            if i < len(self.pools):
                x = self.pools[i](x)
        x = self.mid_res_1(self.mid_attn(self.mid_res_0(x, t)), t)
        for i, blocks in enumerate(self.up):
            x = blocks[0](torch.cat([x, skips.pop()], dim=1), t)
            for attn in blocks[1:]:
                x = attn(x)
            if i < len(self.up_convs):
                x = self.up_convs[i](x)
        return self.out(x)


class DDPM(nn.Module):
    """kzoo `ddpm`'s training step: noise clean images at random timesteps of
    the cosine schedule, predict the noise (MSE), Adam, then the EMA copy of
    the U-Net's weights (not trained, not counted)."""

    def __init__(self, image_size=32, channels=3, num_timesteps=1000, ema_momentum=0.999,
                 **unet_args):
        super().__init__()
        self.network = UNet(image_size, channels, **unet_args)
        self.ema = [p.detach().clone() for p in self.network.parameters()]
        steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        abar = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = (1 - abar[1:] / abar[:-1]).clamp(0, 0.999)
        self.alpha_bars = torch.cumprod(1 - betas, 0).float()
        self.num_timesteps, self.ema_momentum, self.ema_updates = (num_timesteps, ema_momentum,
                                                                   0)

    def make_optimizers(self):
        return [torch.optim.Adam(self.network.parameters(), 2e-4)]

    def noisy(self, x):
        x0 = x * 2 - 1
        t = torch.randint(0, self.num_timesteps, (len(x),))
        noise = torch.randn_like(x0)
        abar = self.alpha_bars[t].view(-1, 1, 1, 1)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise, t, noise

    def train_step(self, x, y, optimizers):
        (opt,) = optimizers
        noisy, t, noise = self.noisy(x)
        loss = nn.functional.mse_loss(self.network(noisy, t), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.ema_updates += 1
        n = self.ema_updates
        decay = min(self.ema_momentum, (1 + n) / (10 + n))
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, list(self.network.parameters()), 1 - decay)
        return loss

    def infer_inputs(self, x):
        return self.noisy(x)[:2]

    def infer(self, inputs):
        return self.network(*inputs)


def trainable_params(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
