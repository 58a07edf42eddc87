"""Layer normalisation (Ba, Kiros and Hinton 2016) over the last axis: forward and backward.

Shapes: any leading axes (written M rows), K the normalised features. Parameters
as PyTorch's ``nn.LayerNorm(K)``: a gain gamma (K,) and a bias beta (K,);
eps = 1e-5 inside the square root, as PyTorch's.

Forward (``layer_norm``), for each row a (K,):

    (L1) mu = mean_k a_k
    (L2) var = mean_k (a_k - mu)^2                      (the biased variance, as PyTorch's)
    (L3) rstd = 1 / sqrt(var + eps),   a_hat = (a - mu) * rstd
    (L4) y = gamma * a_hat + beta

Backward (``layer_norm_backward``, docs/derivations.md, section "Layer normalisation"),
from dy, the gradient reaching y:

    (L5) dgamma = sum_rows dy * a_hat,   dbeta = sum_rows dy
    (L6) da_hat = dy * gamma
    (L7) da = rstd * (da_hat - mean_k(da_hat) - a_hat * mean_k(da_hat * a_hat))

(L7) gathers the three paths from a to a_hat: the direct one, the one through the
mean (L1) and the one through the variance (L2); the derivation shows each.

The recurrent cells that normalise (``layernorm_lstm.py``, ``layernorm_gru.py``) call
these per step and keep a_hat and rstd in their caches; the gains' and biases'
gradients (L5) are then one sum over all steps after the backward loop.
"""

from typing import Any, Dict, Optional, Tuple

from .._checks import check_float, check_same_backend, check_shape
from .._typing import Array
from ..backend import get_array_module
from ._recurrent import input_and_weight_grads, input_half, valid_only

EPS = 1e-5  # inside the square root (L3), as torch.nn.LayerNorm


def normalize(a: Array) -> Tuple[Array, Array]:
    """(L1)-(L3): a (..., K) -> a_hat (..., K), rstd (..., 1)."""
    xp = get_array_module(a)
    mu = a.mean(axis=-1, keepdims=True)                 # (L1)
    centred = a - mu
    var = (centred * centred).mean(axis=-1, keepdims=True)             # (L2)
    rstd = 1.0 / xp.sqrt(var + EPS)                     # (L3)
    return centred * rstd, rstd


def layer_norm(a: Array, gamma: Array, beta: Optional[Array] = None
               ) -> Tuple[Array, Array, Array]:
    """(L1)-(L4): a (..., K), gamma (K,), beta (K,) or None (zero) -> y (..., K) and what the
    backward needs: a_hat (..., K), rstd (..., 1)."""
    a_hat, rstd = normalize(a)
    y = gamma * a_hat                                   # (L4)
    if beta is not None:
        y = y + beta
    return y, a_hat, rstd


def normalize_backward(da_hat: Array, a_hat: Array, rstd: Array) -> Array:
    """(L7): the gradient reaching a_hat (..., K) -> the gradient of a (..., K)."""
    mean_da_hat = da_hat.mean(axis=-1, keepdims=True)
    mean_da_hat_a_hat = (da_hat * a_hat).mean(axis=-1, keepdims=True)
    return rstd * (da_hat - mean_da_hat - a_hat * mean_da_hat_a_hat)     # (L7)


def layer_norm_backward(dy: Array, a_hat: Array, rstd: Array,
                        gamma: Array) -> Tuple[Array, Array, Array]:
    """(L5)-(L7): dy, a_hat (..., K), rstd (..., 1), gamma (K,) -> da (..., K), dgamma (K,),
    dbeta (K,) (the sums (L5) over every leading axis)."""
    K = dy.shape[-1]
    dgamma = (dy * a_hat).reshape(-1, K).sum(axis=0)    # (L5)
    dbeta = dy.reshape(-1, K).sum(axis=0)
    da = normalize_backward(dy * gamma, a_hat, rstd)    # (L6), (L7)
    return da, dgamma, dbeta


# -- what the layer-normalised recurrent cells share ------------------------------------

def check_norm_params(x: Array, G: int, H: int, params: Dict[str, Optional[Array]]) -> None:
    """Each gain or bias of ``params`` (name -> array, or None for a bias not given) must
    be a float array of x's dtype and backend, of shape (G*H,), or (H,) where its name
    ends in '_c' (the LSTM's cell-state normalisation)."""
    for name, p in params.items():
        if p is not None:
            check_float(name, p, x.dtype)
            if name.endswith("_c"):
                check_shape(name, p, (H,), "H")
            else:
                check_shape(name, p, (G * H,), ("G*H",))
    check_same_backend(x=x, **params)


def normalized_input_half(x: Array, W_ih: Array, gamma_ih: Array, beta_ih: Optional[Array],
                          b_ih: Optional[Array]) -> Tuple[Array, Array, Array]:
    """LN(x_t W_ih^T; gamma_ih, beta_ih) + b_ih for every step at once: x (T, N, D) ->
    (T, N, G*H), with what the backward needs, xw_hat (T, N, G*H) and rstd_ih (T, N, 1)."""
    xw = input_half(x, W_ih)                            # (T, N, G*H), one product
    gi, xw_hat, rstd = layer_norm(xw, gamma_ih, beta_ih)
    return (gi if b_ih is None else gi + b_ih), xw_hat, rstd


def normalized_grads(dgi: Array, dgh: Array, dhw: Array, x: Array, h_prev: Array,
                     xw_hat: Array, rstd_ih: Array, hw_hat: Array, cache_params: Dict[str, Any],
                     m: Optional[Array]) -> Tuple[Array, Dict[str, Array]]:
    """What follows a normalised cell's backward loop, as sums and products over all T*N rows.

    dgi, dgh (T, N, G*H): the gradients of the input half LN_ih(x W_ih^T) + b_ih and of
    the recurrent half LN_hh(h W_hh^T) + b_hh; dhw (T, N, G*H) that of h W_hh^T (the loop
    formed it for dh_{t-1}); x (T, N, D), h_prev (T, N, H) the states each step read;
    xw_hat, rstd_ih, hw_hat from the forward; ``cache_params`` the forward's W_ih, gamma_ih
    and which biases it had ('b', 'beta_ih', 'beta_hh'). Padded rows of dgi, dgh, dhw
    are zero; ``m`` keeps whatever the padding holds (NaN) out of every sum.
    Returns dx (T, N, D) and the gradients of W_ih, W_hh, gamma_ih, gamma_hh and of the
    biases given (b_ih, b_hh, beta_ih, beta_hh).
    """
    xp = get_array_module(x)
    W_ih, gamma_ih = cache_params["W_ih"], cache_params["gamma_ih"]
    GH = dgi.shape[-1]
    # (L6)-(L7) for the input half, all steps at once; 0 at padded rows, whatever x held
    dxw = valid_only(xp, normalize_backward(dgi * gamma_ih, xw_hat, rstd_ih), m)
    dx, grads = input_and_weight_grads(dxw, dhw, x, h_prev, W_ih, False, m)
    grads["gamma_ih"] = valid_only(xp, dgi * xw_hat, m).reshape(-1, GH).sum(axis=0)    # (L5)
    grads["gamma_hh"] = valid_only(xp, dgh * hw_hat, m).reshape(-1, GH).sum(axis=0)
    dgi_sum, dgh_sum = dgi.reshape(-1, GH).sum(axis=0), dgh.reshape(-1, GH).sum(axis=0)
    if cache_params["b"]:
        grads["b_ih"], grads["b_hh"] = dgi_sum, dgh_sum
    if cache_params["beta_ih"]:
        grads["beta_ih"] = dgi_sum.copy() if cache_params["b"] else dgi_sum
    if cache_params["beta_hh"]:
        grads["beta_hh"] = dgh_sum.copy() if cache_params["b"] else dgh_sum
    return dx, grads
