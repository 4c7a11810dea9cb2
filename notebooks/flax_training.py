# %% [markdown]
# # Training a Flax model with jaxloss
#
# A small Flax NNX multilayer perceptron learns scikit-learn's handwritten digits (8x8 images,
# 10 classes, shipped with scikit-learn, so nothing is downloaded). The loss is
# `jaxloss.cross_entropy`, called exactly as `torch.nn.functional.cross_entropy` would be, with
# `label_smoothing` and `ignore_index`, inside a `jax.jit`-compiled optax train step.
#
# The last section trains the same model with `jaxloss.linear_cross_entropy`, which fuses the
# output layer into the loss.
#
# This notebook is generated from `notebooks/flax_training.py` (`python notebooks/sync.py`);
# the test suite runs both.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import jaxloss

# %% [markdown]
# ## Data
#
# 1797 images of 64 pixels with values 0..16, scaled to [0, 1]; a stratified quarter is held
# out for testing.

# %%
digits = load_digits()
x_all = (digits.data / 16.0).astype(np.float32)
y_all = digits.target.astype(np.int32)
x_train, x_test, y_train, y_test = train_test_split(
    x_all, y_all, test_size=0.25, random_state=0, stratify=y_all
)
print("train:", x_train.shape, "test:", x_test.shape)

# %% [markdown]
# ## Fixed-size batches, padded with `ignore_index`
#
# `jax.jit` compiles once per input shape. 1347 training images do not split evenly into
# batches of 128, so the last batch of every epoch is padded with dummy rows whose label is
# `IGNORE = -1`. Passing `ignore_index=IGNORE` to the loss drops those rows from the loss and
# from the `"mean"` denominator, so every step has the same shape and the step compiles once.

# %%
BATCH = 128
IGNORE = -1


def epoch_batches(key, x, y, batch=BATCH):
    """Shuffle (x, y) and cut it into equal batches; pad the last one with label IGNORE."""
    n = len(x)
    perm = np.asarray(jax.random.permutation(key, n))
    n_batches = -(-n // batch)
    pad = n_batches * batch - n
    xp = np.concatenate([x[perm], np.zeros((pad, x.shape[1]), x.dtype)])
    yp = np.concatenate([y[perm], np.full(pad, IGNORE, y.dtype)])
    return xp.reshape(n_batches, batch, -1), yp.reshape(n_batches, batch)


xb, yb = epoch_batches(jax.random.key(0), x_train, y_train)
print("batches:", xb.shape, "padded rows in the last batch:", int((yb[-1] == IGNORE).sum()))

# %% [markdown]
# ## The model
#
# Two hidden ReLU layers and a linear head. `features` returns the last hidden layer, which
# the `linear_cross_entropy` section feeds to the loss together with the head's weights.

# %%
class MLP(nnx.Module):
    def __init__(self, din, dhidden, dout, *, rngs):
        self.hidden1 = nnx.Linear(din, dhidden, rngs=rngs)
        self.hidden2 = nnx.Linear(dhidden, dhidden, rngs=rngs)
        self.head = nnx.Linear(dhidden, dout, rngs=rngs)

    def features(self, x):
        return nnx.relu(self.hidden2(nnx.relu(self.hidden1(x))))

    def __call__(self, x):
        return self.head(self.features(x))


# %% [markdown]
# ## The loss
#
# torch's keywords, torch's numbers. With `label_smoothing=0.1` the target puts 0.91 on the
# true class and 0.01 on each other class.

# %%
LABEL_SMOOTHING = 0.1


def ce_loss(model, x, y):
    logits = model(x)
    return jaxloss.cross_entropy(logits, y, label_smoothing=LABEL_SMOOTHING, ignore_index=IGNORE)


# %% [markdown]
# Padding rows changes nothing: the loss of the padded last batch equals the loss of its real
# rows alone.

# %%
probe = MLP(64, 128, 10, rngs=nnx.Rngs(0))
real = yb[-1] != IGNORE
print(f"padded batch: {float(ce_loss(probe, xb[-1], yb[-1])):.6f}")
print(f"real rows   : {float(ce_loss(probe, xb[-1][real], yb[-1][real])):.6f}")

# %% [markdown]
# ## A `jax.jit` train step and the training loop
#
# `nnx.split` separates the model into a static graph definition and a pytree of parameters;
# the jitted step differentiates the loss with respect to that pytree and applies an optax
# Adam update. The same `train` function takes any loss with the signature
# `loss_fn(model, x, y)`.

# %%
EPOCHS = 40


def make_train_step(graphdef, tx, loss_fn):
    @jax.jit
    def train_step(params, opt_state, x, y):
        def objective(p):
            return loss_fn(nnx.merge(graphdef, p), x, y)

        loss, grads = jax.value_and_grad(objective)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def train(loss_fn, *, epochs=EPOCHS, seed=0, learning_rate=2e-3):
    model = MLP(64, 128, 10, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model)
    tx = optax.adam(learning_rate)
    opt_state = tx.init(params)
    train_step = make_train_step(graphdef, tx, loss_fn)
    key = jax.random.key(seed)
    losses = []
    for _ in range(epochs):
        key, subkey = jax.random.split(key)
        for x, y in zip(*epoch_batches(subkey, x_train, y_train)):
            params, opt_state, loss = train_step(params, opt_state, x, y)
            losses.append(loss)
    return nnx.merge(graphdef, params), np.asarray(jax.device_get(losses))


def test_accuracy(model):
    return float(jnp.mean(jnp.argmax(model(x_test), axis=-1) == y_test))


start = time.perf_counter()
model, ce_losses = train(ce_loss)
ce_seconds = time.perf_counter() - start
ce_accuracy = test_accuracy(model)
print(f"cross_entropy: {len(ce_losses)} steps in {ce_seconds:.1f} s (compilation included)")
print(f"cross_entropy: test accuracy {ce_accuracy:.4f}")

# %%
assert ce_accuracy >= 0.95, ce_accuracy
assert ce_seconds < 60, ce_seconds

# %% [markdown]
# ## The loss curve
#
# With label smoothing the loss cannot reach 0: its floor is the entropy of the smoothed
# target, which is the cross entropy of a model that predicts the smoothed target exactly.

# %%
smoothed = jnp.full((1, 10), LABEL_SMOOTHING / 10).at[0, 0].add(1 - LABEL_SMOOTHING)
floor = float(jaxloss.cross_entropy(jnp.log(smoothed), jnp.array([0]), label_smoothing=LABEL_SMOOTHING))
print(f"loss floor with label_smoothing={LABEL_SMOOTHING}: {floor:.4f}")

fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(ce_losses, label="cross_entropy")
ax.axhline(floor, color="gray", linestyle="--", label="floor (entropy of the smoothed target)")
ax.set_xlabel("step")
ax.set_ylabel("training loss")
ax.set_yscale("log")
ax.legend()
plt.show()

# %% [markdown]
# ## The same model with `linear_cross_entropy` as the head
#
# `jaxloss.linear_cross_entropy(input, linear_weight, target, *, linear_bias, ...)` computes
# `cross_entropy(input @ linear_weight.T + linear_bias, target, ...)` without materialising the
# logits, which matters when the number of classes is a large vocabulary. The weight has
# torch's `(out_features, in_features)` layout, so the Flax kernel `(in, out)` is transposed.
# At the trained parameters both losses agree:

# %%
def lce_loss(model, x, y):
    head = model.head
    return jaxloss.linear_cross_entropy(
        model.features(x),
        head.kernel[...].T,
        y,
        linear_bias=head.bias[...],
        label_smoothing=LABEL_SMOOTHING,
        ignore_index=IGNORE,
    )


print(f"cross_entropy       : {float(ce_loss(model, xb[-1], yb[-1])):.6f}")
print(f"linear_cross_entropy: {float(lce_loss(model, xb[-1], yb[-1])):.6f}")

# %% [markdown]
# Training from the same initialisation with the fused loss:

# %%
start = time.perf_counter()
lce_model, lce_losses = train(lce_loss)
lce_seconds = time.perf_counter() - start
lce_accuracy = test_accuracy(lce_model)
print(f"linear_cross_entropy: {len(lce_losses)} steps in {lce_seconds:.1f} s (compilation included)")
print(f"linear_cross_entropy: test accuracy {lce_accuracy:.4f}")
assert lce_accuracy >= 0.95, lce_accuracy
# Same initialisation, same batches, the same loss computed another way: the two runs follow
# the same trajectory up to float32 rounding.
print(f"largest difference between the two loss curves: {np.max(np.abs(ce_losses - lce_losses)):.1e}")

fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(ce_losses, label="cross_entropy")
ax.plot(lce_losses, label="linear_cross_entropy", alpha=0.7)
ax.set_xlabel("step")
ax.set_ylabel("training loss")
ax.set_yscale("log")
ax.legend()
plt.show()
