/* The maximum-likelihood fit's inner loop, compiled: `solve._gauss_newton_db` then
 * `solve._cost`, row by row, for `gateway.presence.batch`.
 *
 * Optional, like habluetooth's Cython: the build compiles it when a C compiler is there
 * (setup.py, optional=True) and `batch.py` falls back to numpy when it is not. A test holds
 * both paths to the scalar solver. Plain C over the buffer protocol (no numpy headers):
 * every argument is a C-contiguous float64 buffer.
 *
 * gauss_newton(rx, ry, half_k, log_est, weight, x, y, b, var, cost, width, iterations,
 *              prior_db)
 *   rx .. weight: rows × width (padding has weight 0 and is skipped);
 *   x, y, b: the start of each row, overwritten with its end point;
 *   var: the position variance (trace of the xy covariance; -1 when singular);
 *   cost: the cost at the end point, with the power offset's prior.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

typedef struct {
    double xx, xy, xb, yy, yb, bb;
} Normal;

/* Cofactors of the symmetric 3×3 normal matrix and its determinant (as solve._solve3). */
static double cofactors(const Normal *a, double c[6]) {
    c[0] = a->yy * a->bb - a->yb * a->yb;  /* c11 */
    c[1] = a->xb * a->yb - a->xy * a->bb;  /* c12 */
    c[2] = a->xy * a->yb - a->xb * a->yy;  /* c13 */
    c[3] = a->xx * a->bb - a->xb * a->xb;  /* c22 */
    c[4] = a->xb * a->xy - a->xx * a->yb;  /* c23 */
    c[5] = a->xx * a->yy - a->xy * a->xy;  /* c33 */
    return a->xx * c[0] + a->xy * c[1] + a->xb * c[2];
}

static void fit_row(const double *rx, const double *ry, const double *hk, const double *le,
                    const double *w, Py_ssize_t width, double *px, double *py, double *pb,
                    double *pvar, double *pcost, long iterations, double prior_db) {
    const double prior = 1.0 / (prior_db * prior_db);
    double x = *px, y = *py, b = *pb;
    Normal a = {prior, 0.0, 0.0, prior, 0.0, prior};
    double c[6], det;
    int singular = 0;
    for (long it = 0; it < iterations; it++) {
        Normal n = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        double gx = 0.0, gy = 0.0, gb = 0.0;
        for (Py_ssize_t k = 0; k < width; k++) {
            if (w[k] == 0.0) continue;
            double dx = x - rx[k], dy = y - ry[k];
            double d2 = dx * dx + dy * dy;
            if (d2 < 0.01) d2 = 0.01;
            double res = hk[k] * (log(d2) - le[k]) - b;
            double jx = 2.0 * hk[k] * dx / d2, jy = 2.0 * hk[k] * dy / d2;
            double wjx = w[k] * jx, wjy = w[k] * jy;
            n.xx += wjx * jx;
            n.xy += wjx * jy;
            n.yy += wjy * jy;
            n.xb -= wjx;
            n.yb -= wjy;
            n.bb += w[k];
            gx += wjx * res;
            gy += wjy * res;
            gb -= w[k] * res;
        }
        n.bb += prior;
        gb += prior * b;
        a = n;
        det = cofactors(&a, c);
        if (fabs(det) < 1e-12) {
            singular = 1;
            break;
        }
        double sx = (c[0] * gx + c[1] * gy + c[2] * gb) / det;
        double sy = (c[1] * gx + c[3] * gy + c[4] * gb) / det;
        double sb = (c[2] * gx + c[4] * gy + c[5] * gb) / det;
        double norm = hypot(sx, sy);
        if (norm > 5.0) {  /* damp wild steps far from the receivers */
            sx *= 5.0 / norm;
            sy *= 5.0 / norm;
            sb *= 5.0 / norm;
        }
        x -= sx;
        y -= sy;
        b -= sb;
        if (norm < 0.01) break;
    }
    if (singular) {
        *pvar = -1.0;
    } else {
        det = cofactors(&a, c);
        *pvar = fabs(det) < 1e-12 ? -1.0 : c[0] / det + c[3] / det;
    }
    double cost = (b / prior_db) * (b / prior_db);
    for (Py_ssize_t k = 0; k < width; k++) {
        if (w[k] == 0.0) continue;
        double d2 = (x - rx[k]) * (x - rx[k]) + (y - ry[k]) * (y - ry[k]);
        double res = hk[k] * (log(d2 > 0.01 ? d2 : 0.01) - le[k]) - b;
        cost += res * res * w[k];
    }
    *px = x;
    *py = y;
    *pb = b;
    *pcost = cost;
}

static PyObject *gauss_newton(PyObject *self, PyObject *args) {
    Py_buffer in[5], out[5];
    Py_ssize_t width;
    long iterations;
    double prior_db;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*w*w*w*w*w*nld", &in[0], &in[1], &in[2], &in[3],
                          &in[4], &out[0], &out[1], &out[2], &out[3], &out[4], &width,
                          &iterations, &prior_db))
        return NULL;
    Py_ssize_t rows = out[0].len / (Py_ssize_t)sizeof(double);
    int ok = width > 0;
    for (int i = 0; i < 5; i++) {
        ok = ok && in[i].len == rows * width * (Py_ssize_t)sizeof(double);
        ok = ok && out[i].len == rows * (Py_ssize_t)sizeof(double);
    }
    if (ok) {
        const double *rx = in[0].buf, *ry = in[1].buf, *hk = in[2].buf, *le = in[3].buf,
                     *w = in[4].buf;
        double *x = out[0].buf, *y = out[1].buf, *b = out[2].buf, *var = out[3].buf,
               *cost = out[4].buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t r = 0; r < rows; r++) {
            Py_ssize_t o = r * width;
            fit_row(rx + o, ry + o, hk + o, le + o, w + o, width, x + r, y + r, b + r, var + r,
                    cost + r, iterations, prior_db);
        }
        Py_END_ALLOW_THREADS
    }
    for (int i = 0; i < 5; i++) {
        PyBuffer_Release(&in[i]);
        PyBuffer_Release(&out[i]);
    }
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "gauss_newton: buffers of rows x width float64 expected");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"gauss_newton", gauss_newton, METH_VARARGS, "The dB-domain Gauss-Newton fit, row by row."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&module); }
