"""Fused GPU kernels: each cell's per-step elementwise work in one CUDA kernel.

The same maths as the plain ufunc path of ``rnn.py``, ``lstm.py`` and ``gru.py``
(equation numbers refer to those modules), with the same inputs: the
pre-activations arrive already scaled the way the plain path scales them
(sigmoid(z) = (1 + tanh(z / 2)) / 2, the 1/2 folded into the weights), so
``y = a tanh(z') + b`` here as there. Each kernel reads a gate block of row n
at column j through raw (N, G*H) arrays; one thread per (n, j) of (N, H).
Used only on CuPy, chosen by ``backend.fused_kernels``; the test suite checks
them against the plain path on a GPU.
"""

import numpy as np

from ..backend import elementwise_kernel


class _Kernels:
    """Callables with the plain path's signatures, compiled on first use."""

    # -- LSTM ------------------------------------------------------------------
    def lstm_forward_step(self, z, rec, c_prev, c, tanh_c, h):
        """(1)-(4): z (N, 4H) holds the scaled input half and becomes the gates."""
        H = np.int32(c.shape[1])
        elementwise_kernel(
            "raw T rec, T c_prev, int32 H", "raw T z, T c, T tc, T h",
            """
            const ptrdiff_t n = i / H, j = i % H, k = n * 4 * H + j;
            const T ig = tanh(z[k] + rec[k]) * (T)0.5 + (T)0.5;                  // (2)
            const T fg = tanh(z[k + H] + rec[k + H]) * (T)0.5 + (T)0.5;
            const T gg = tanh(z[k + 2 * H] + rec[k + 2 * H]);
            const T og = tanh(z[k + 3 * H] + rec[k + 3 * H]) * (T)0.5 + (T)0.5;
            z[k] = ig; z[k + H] = fg; z[k + 2 * H] = gg; z[k + 3 * H] = og;
            c = fg * c_prev + ig * gg;                                           // (3)
            tc = tanh(c);                                                        // (4)
            h = og * tc;
            """, "npnn_lstm_forward_step")(rec, c_prev, H, z, c, tanh_c, h)

    def lstm_backward_step(self, y, c_prev, tanh_c, dh, dc, dz):
        """(7)-(11): dh, dc (N, H) reach h_t, c_t; fills dz (N, 4H), turns dc into dc_{t-1}."""
        H = np.int32(dh.shape[1])
        elementwise_kernel(
            "raw T y, T c_prev, T tc, T dh, int32 H", "raw T dz, T dc",
            """
            const ptrdiff_t n = i / H, j = i % H, k = n * 4 * H + j;
            const T ig = y[k], fg = y[k + H], gg = y[k + 2 * H], og = y[k + 3 * H];
            const T dct = dc + dh * og * ((T)1 - tc * tc);                       // (8)
            dz[k] = dct * gg * ig * ((T)1 - ig);                                 // (9), (11)
            dz[k + H] = dct * c_prev * fg * ((T)1 - fg);
            dz[k + 2 * H] = dct * ig * ((T)1 - gg * gg);
            dz[k + 3 * H] = dh * tc * og * ((T)1 - og);                          // (7), (11)
            dc = dct * fg;                                                       // (10)
            """, "npnn_lstm_backward_step")(y, c_prev, tanh_c, dh, H, dz, dc)

    # -- GRU -------------------------------------------------------------------
    def gru_forward_step(self, rz, gh_rz, n, gh_n, b_hn, h_prev, h):
        """(3)-(5): rz (N, 2H) holds gi_r, gi_z (scaled) and becomes r, z; n (N, H)
        holds gi_n and becomes n; gh_n (N, H) holds W_hn h and gains b_hn (H,)."""
        H = np.int32(h.shape[1])
        elementwise_kernel(
            "raw T gh_rz, raw T b_hn, T h_prev, int32 H", "raw T rz, T n, T gh_n, T h",
            """
            const ptrdiff_t row = i / H, j = i % H, k = row * 2 * H + j;
            const T r = tanh(rz[k] + gh_rz[k]) * (T)0.5 + (T)0.5;                // (3)
            const T z = tanh(rz[k + H] + gh_rz[k + H]) * (T)0.5 + (T)0.5;
            rz[k] = r; rz[k + H] = z;
            gh_n = gh_n + b_hn[j];
            const T nn = tanh(n + r * gh_n);                                     // (4)
            n = nn;
            h = nn + z * (h_prev - nn);                                          // (5)
            """, "npnn_gru_forward_step")(gh_rz, b_hn, h_prev, H, rz, n, gh_n, h)

    def gru_backward_step(self, rz, n, h_prev, gh_n, dh, dg, dh_z):
        """(8)-(12): fills dg = [da_n r, da_r, da_z, da_n] (N, 4H) and dh_z = dh * z (N, H)."""
        H = np.int32(dh.shape[1])
        elementwise_kernel(
            "raw T rz, T n, T h_prev, T gh_n, T dh, int32 H", "raw T dg, T dh_z",
            """
            const ptrdiff_t row = i / H, j = i % H, k = row * 2 * H + j, k4 = row * 4 * H + j;
            const T r = rz[k], z = rz[k + H];
            const T da_n = dh * ((T)1 - z) * ((T)1 - n * n);                     // (8), (9)
            dg[k4] = da_n * r;                                                   // (12)
            dg[k4 + H] = da_n * gh_n * r * ((T)1 - r);                           // (10), (11)
            dg[k4 + 2 * H] = dh * (h_prev - n) * z * ((T)1 - z);
            dg[k4 + 3 * H] = da_n;
            dh_z = dh * z;                                                       // (8)
            """, "npnn_gru_backward_step")(rz, n, h_prev, gh_n, dh, H, dg, dh_z)

    # -- RNN -------------------------------------------------------------------
    def rnn_forward_step(self, a, rec, h, relu):
        """(1)-(2): h = phi(a + rec)."""
        body = "h = max(a + rec, (T)0);" if relu else "h = tanh(a + rec);"
        elementwise_kernel("T a, T rec", "T h", body,
                           "npnn_rnn_forward_" + ("relu" if relu else "tanh"))(a, rec, h)

    def rnn_backward_step(self, g, h, da, relu):
        """(5): da = g * phi'(a) from the output h."""
        body = "da = h > (T)0 ? g : (T)0;" if relu else "da = g * ((T)1 - h * h);"
        elementwise_kernel("T g, T h", "T da", body,
                           "npnn_rnn_backward_" + ("relu" if relu else "tanh"))(g, h, da)


KERNELS = _Kernels()
