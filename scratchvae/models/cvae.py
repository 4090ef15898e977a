"""The conditional VAE (Sohn et al. 2015; Kingma et al. 2014, model M2 with
observed labels): encoder and decoder both see the class label c as a
one-hot vector, so the latent z need not encode the class and sampling
z ~ N(0, I) with a chosen c draws an image of that class.

    q(z | x, c) = N(mu(x, c), diag exp(logvar(x, c))),   p(x | z, c)
    loss = 1/N sum_n [ -log p(x_n | z_n, c_n) + beta KL(q(z | x_n, c_n) || N(0, I)) ]

conv-cvae (Z = 10, 879,317 parameters): the conv VAE with c joined twice,

    encoder: Conv(1,32,4,2,1) ReLU Conv(32,64,4,2,1) ReLU Flatten  -> h (3136)
             [h | c] Linear(3136+10, 128) ReLU Linear(128, 2Z)     -> [mu | logvar]
    decoder: [z | c] Linear(Z+10, 128) ReLU Linear(128, 3136) ReLU Reshape(64, 7, 7)
             ConvT(64,32,4,2,1) ReLU ConvT(32,1,4,2,1)             -> logits

mlp-cvae (Z = 20): [x | c] Linear(784+10, 400) ReLU Linear(400, 2Z);
                   [z | c] Linear(Z+10, 400) ReLU Linear(400, 784).

Backward: the label is data, not a function of any parameter, so the
gradient that reaches its columns of the concatenation is dropped. The
chain of VAE.backward is unchanged; only its two outer links differ:

    decoder: du = net.backward(dout), u = [z | c]   ->  dz = du[:, :Z]
    encoder: dv = head.backward(dh),  v = [h | c]   ->  dh_feat = dv[:, :F],
             then the convolutional trunk: features.backward(dh_feat)
"""
import numpy as np

from ..backend import check_float, check_shape, get_xp, standard_normal, to_numpy
from ..layers import Concat, Flatten, Linear, Module, ReLU, Reshape, Sequential
from .conv_vae import conv_features, deconv_layers
from .vae import VAE


class ConditionalEncoder(Module):
    """(x, c) -> head([features(x) | c]): a feature trunk (may have no
    parameters, e.g. a bare Flatten) and a head that also sees c."""

    def __init__(self, features, head):
        self.features = features
        self.head = head
        self.join = Concat(axis=1)
        self._trunk_needs_grad = True

    def forward(self, x, c):
        return self.head.forward(self.join.forward([self.features.forward(x), c]))

    def backward(self, dh):
        """dh (N, 2Z) -> None (images and labels need no gradient)."""
        dv = self.head.backward(dh)
        if not self._trunk_needs_grad:
            return None
        dfeat, _dc = self.join.backward(dv)  # _dc: the label carries no gradient
        return self.features.backward(dfeat)

    def no_input_grad(self):
        """The images need no gradient. A trunk with parameters skips only its
        own input gradient; a trunk without any (Flatten) is not visited by the
        backward at all, so the head skips its input gradient too."""
        if self.features.parameters():
            self.features.no_input_grad()
        else:
            self.head.no_input_grad()
            self._trunk_needs_grad = False
        return self


class ConditionalDecoder(Module):
    """(z, c) -> net([z | c])."""

    def __init__(self, net):
        self.net = net
        self.join = Concat(axis=1)

    def forward(self, z, c):
        return self.net.forward(self.join.forward([z, c]))

    def backward(self, dout):
        """dout (M, *image_shape) -> dz (M, Z)."""
        dz, _dc = self.join.backward(self.net.backward(dout))  # _dc: no gradient to labels
        return dz


class CVAE(VAE):
    """A VAE whose encoder and decoder are conditioned on one-hot class labels.

    encoder: a ConditionalEncoder (x, c) -> (N, 2Z); decoder: a
    ConditionalDecoder (z, c) -> (M, *image_shape). Every VAE option
    (likelihood, beta, KL schedule, n_samples) applies unchanged.
    ``loss(x, labels=...)`` requires labels: int (N,) in [0, n_classes).
    """

    def __init__(self, encoder, decoder, latent_dim, n_classes=10, **vae_options):
        if n_classes < 2:
            raise ValueError(f"CVAE: expected n_classes >= 2, got {n_classes}")
        self.n_classes = int(n_classes)
        super().__init__(encoder, decoder, latent_dim, **vae_options)

    # -- the label -------------------------------------------------------------
    def one_hot(self, labels, n):
        """Validated labels (n,) -> one-hot c (n, K) of the parameters' dtype
        on their device. Labels arrive as a host integer array."""
        name = type(self).__name__
        if labels is None:
            raise ValueError(f"{name}: a conditional VAE needs the class labels of the batch; "
                             f"pass labels= (int array of shape ({n},))")
        labels = np.asarray(to_numpy(labels))
        if labels.shape != (n,):
            raise ValueError(f"{name}: expected labels of shape ({n},), got {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{name}: expected integer labels, got dtype {labels.dtype}")
        if n and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise ValueError(f"{name}: expected labels in [0, {self.n_classes - 1}], got values "
                             f"from {labels.min()} to {labels.max()}")
        xp = self.xp
        y = xp.asarray(labels.astype(np.int64))
        return (y[:, None] == xp.arange(self.n_classes)[None, :]).astype(self.param_dtype)

    def condition(self, labels, n):
        return self.one_hot(labels, n)

    # -- the pieces ----------------------------------------------------------
    def encode(self, x, c=None):
        """(x (N, *image_shape), c (N, K)) -> (mu, logvar), each (N, Z)."""
        if c is None:
            raise ValueError(f"{type(self).__name__}.encode: expected one-hot labels c, got None")
        name = type(self).__name__
        check_shape(name, "images", x, (None,) + self.image_shape)
        check_float(name, "images", x, self.param_dtype)
        check_shape(name, "one-hot labels", c, (x.shape[0], self.n_classes))
        h = self.encoder.forward(x, c)
        Z = self.latent_dim
        return h[:, :Z], h[:, Z:]

    def decode(self, z, c=None):
        """(z (M, Z), c (N, K)) -> decoder output (M, *image_shape). With L
        samples per image M = L N and c is repeated L times, matching the
        sampler's row order (sample l of image n at row l N + n)."""
        if c is None:
            raise ValueError(f"{type(self).__name__}.decode: expected one-hot labels c, got None")
        reps, rest = divmod(z.shape[0], c.shape[0])
        if rest or reps < 1:
            raise ValueError(f"{type(self).__name__}.decode: expected z with a multiple of "
                             f"{c.shape[0]} rows, got {z.shape[0]}")
        if reps > 1:
            c = get_xp(c).concatenate([c] * reps, axis=0)
        return self.decoder.forward(z, c)

    def reconstruct(self, x, labels):
        """Decode the posterior mean: (x, labels) -> mean image."""
        c = self.one_hot(labels, x.shape[0])
        mu, _ = self.encode(x, c)
        return self.mean_image(self.decode(mu, c))

    def sample(self, n, rng, labels=None):
        """Draw n images of the given classes: z ~ N(0, I), c = one_hot(labels);
        ``labels`` is an int (every image of that class) or an array (n,)."""
        if labels is None:
            raise ValueError(f"{type(self).__name__}.sample: expected labels (the classes to "
                             f"draw), got None")
        labels = np.full(n, labels, dtype=np.int64) if np.ndim(labels) == 0 else labels
        c = self.one_hot(labels, n)
        z = self.xp.asarray(standard_normal(rng, (n, self.latent_dim), self.dtype))
        return self.mean_image(self.decode(z, c))


def conv_cvae(image_shape=(1, 28, 28), latent_dim=10, hidden_dim=128, channels=(32, 64),
              n_classes=10, rng=None, dtype=np.float32, **vae_options):
    """Build the conditional conv VAE (image sides multiples of 4)."""
    rng = np.random.default_rng(0) if rng is None else rng
    kw = dict(rng=rng, dtype=dtype)
    layers, width = conv_features(image_shape, channels, **kw)
    features = Sequential(*layers)
    head = Sequential(
        Linear(width + n_classes, hidden_dim, **kw), ReLU(inplace=True),
        Linear(hidden_dim, 2 * latent_dim, **kw),
    )
    net = Sequential(
        Linear(latent_dim + n_classes, hidden_dim, **kw), ReLU(inplace=True),
        Linear(hidden_dim, width, **kw), ReLU(inplace=True),
        *deconv_layers(image_shape, channels, **kw),
    )
    return CVAE(ConditionalEncoder(features, head), ConditionalDecoder(net), latent_dim,
                n_classes=n_classes, image_shape=image_shape, **vae_options)


def mlp_cvae(image_shape=(1, 28, 28), hidden_dim=400, latent_dim=20, n_classes=10, rng=None,
             dtype=np.float32, **vae_options):
    """Build the conditional MLP VAE."""
    rng = np.random.default_rng(0) if rng is None else rng
    D = int(np.prod(image_shape))
    kw = dict(rng=rng, dtype=dtype)
    head = Sequential(
        Linear(D + n_classes, hidden_dim, **kw), ReLU(inplace=True),
        Linear(hidden_dim, 2 * latent_dim, **kw),
    )
    net = Sequential(
        Linear(latent_dim + n_classes, hidden_dim, **kw), ReLU(inplace=True),
        Linear(hidden_dim, D, **kw),
        Reshape(*image_shape),
    )
    return CVAE(ConditionalEncoder(Flatten(), head), ConditionalDecoder(net), latent_dim,
                n_classes=n_classes, image_shape=image_shape, **vae_options)
