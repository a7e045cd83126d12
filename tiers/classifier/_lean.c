/* The classifier's arithmetic for one text, compiled: from the feature ids of its terms (one list
 * per vectorizer, repeats included) to class probabilities, or straight to the best label and its
 * margin.
 *
 * It computes what tiers/classifier/tfidf.py and tiers/classifier/model.py compute with NumPy (counts, sublinear tf,
 * idf, l2 norm per vectorizer, one row of coefficients per term, softmax), in one call instead of
 * about twenty: a Banking77 decision costs about a third of the NumPy path's time. tests/unit/
 * test_lean_kernel.py checks both paths against each other and against scikit-learn.
 *
 * A model may add a dense view of the text (tiers/classifier/embeddings.py): the sum of its word pieces'
 * half-precision vectors, l2-normalised and scaled, whose coefficients are the last rows of the
 * weights. The pieces' ids then come as one more list after the vectorizers' lists. It may also
 * have a head over that view (tiers/classifier/head.py): one hidden layer (ReLU) on the unit embedding
 * whose class scores are added to the logits.
 *
 * The model's arrays are borrowed through the buffer protocol and held for the kernel's lifetime;
 * every id is checked against the number of features (or pieces) before it is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARTS 8
/* Rows of coefficients asked for this many terms ahead: a Banking77 decision's arithmetic went
 * from 7.5 to 6.5 µs over the 3,080 test texts (their rows are spread over a 22 MiB matrix). */
#define PREFETCH_AHEAD 8

typedef struct {
    PyObject_HEAD
    Py_buffer weights;   /* float32, features x classes, C order */
    Py_buffer intercept; /* float64, classes */
    Py_buffer idf;       /* float64, features */
    Py_buffer pieces;    /* float16 bits (uint16), pieces x dims; held when dims > 0 */
    Py_buffer head[4];   /* hidden weights (float32, dims x hidden), hidden bias (float32), out
                            weights (float32, hidden x classes), out bias (float64); held: heads */
    int heads;           /* how many of head[] are held (4: the model has a head) */
    Py_ssize_t hidden;
    Py_ssize_t features;
    Py_ssize_t classes;
    Py_ssize_t dims;     /* the dense view's size (0: none); its weights are the last dims rows */
    double scale;        /* the dense view's weight next to the tf-idf features */
    int parts;
    char sublinear[MAX_PARTS];
    int held; /* how many of the first three buffers are held */
    float *scratch; /* features - dims zeros, for `nearest` (allocated on first use) */
} Kernel;

static int get_buffer(PyObject *obj, Py_buffer *view, const char *format, int ndim, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return -1;
    }
    if (view->ndim != ndim || view->format == NULL || strcmp(view->format, format) != 0) {
        PyErr_Format(PyExc_ValueError, "%s: a C-contiguous %d-dimensional array of format '%s' is needed",
                     what, ndim, format);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static void Kernel_dealloc(Kernel *self) {
    if (self->held > 0) PyBuffer_Release(&self->weights);
    if (self->held > 1) PyBuffer_Release(&self->intercept);
    if (self->held > 2) PyBuffer_Release(&self->idf);
    if (self->dims > 0) PyBuffer_Release(&self->pieces);
    for (int i = 0; i < self->heads; i++) PyBuffer_Release(&self->head[i]);
    free(self->scratch);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Holds a head's four arrays after checking them against the dense view and the classes. */
static int init_head(Kernel *self, PyObject *head) {
    static const char *formats[] = {"f", "f", "f", "d"};
    static const int ndims[] = {2, 1, 2, 1};
    static const char *names[] = {"head hidden weights", "head hidden bias", "head out weights", "head out bias"};
    if (self->dims == 0 || !PyTuple_Check(head) || PyTuple_GET_SIZE(head) != 4) {
        PyErr_SetString(PyExc_ValueError, "head: a tuple of four arrays, with pieces, is needed");
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        if (get_buffer(PyTuple_GET_ITEM(head, i), &self->head[i], formats[i], ndims[i], names[i]) < 0) return -1;
        self->heads = i + 1;
    }
    self->hidden = self->head[1].shape[0];
    if (self->hidden < 1 || self->head[0].shape[0] != self->dims || self->head[0].shape[1] != self->hidden ||
        self->head[2].shape[0] != self->hidden || self->head[2].shape[1] != self->classes ||
        self->head[3].shape[0] != self->classes) {
        PyErr_Format(PyExc_ValueError, "a head of %zd hidden units does not fit %zd dimensions and %zd classes",
                     self->hidden, self->dims, self->classes);
        return -1;
    }
    return 0;
}

static int Kernel_init(Kernel *self, PyObject *args, PyObject *kwds) {
    static char *keywords[] = {"weights", "intercept", "idf", "sublinear", "pieces", "scale", "head", NULL};
    PyObject *weights, *intercept, *idf, *sublinear, *pieces = Py_None, *head = Py_None;
    double scale = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO!|OdO", keywords, &weights, &intercept, &idf,
                                     &PyTuple_Type, &sublinear, &pieces, &scale, &head)) {
        return -1;
    }
    if (self->held) {
        PyErr_SetString(PyExc_RuntimeError, "a kernel is initialised once");
        return -1;
    }
    if (get_buffer(weights, &self->weights, "f", 2, "weights") < 0) return -1;
    self->held = 1;
    if (get_buffer(intercept, &self->intercept, "d", 1, "intercept") < 0) return -1;
    self->held = 2;
    if (get_buffer(idf, &self->idf, "d", 1, "idf") < 0) return -1;
    self->held = 3;
    if (pieces != Py_None) {
        if (get_buffer(pieces, &self->pieces, "H", 2, "pieces (float16 bits as uint16)") < 0) return -1;
        self->dims = self->pieces.shape[1];
        self->scale = scale;
        if (self->dims < 1) {
            PyBuffer_Release(&self->pieces);
            self->dims = 0;
            PyErr_SetString(PyExc_ValueError, "pieces: at least one dimension is needed");
            return -1;
        }
    }
    self->features = self->weights.shape[0];
    self->classes = self->weights.shape[1];
    Py_ssize_t sparse = self->features - self->dims;
    if (self->classes < 1 || sparse < 0 || self->intercept.shape[0] != self->classes ||
        self->idf.shape[0] != sparse) {
        PyErr_Format(PyExc_ValueError,
                     "weights %zd x %zd, %zd intercepts, %zd idf weights and %zd dense dimensions do not fit",
                     self->features, self->classes, self->intercept.shape[0], self->idf.shape[0], self->dims);
        return -1;
    }
    Py_ssize_t parts = PyTuple_GET_SIZE(sublinear);
    if (parts < 1 || parts > MAX_PARTS) {
        PyErr_Format(PyExc_ValueError, "1 to %d vectorizers, not %zd", MAX_PARTS, parts);
        return -1;
    }
    if (head != Py_None && init_head(self, head) < 0) return -1;
    self->parts = (int)parts;
    for (Py_ssize_t i = 0; i < parts; i++) {
        int flag = PyObject_IsTrue(PyTuple_GET_ITEM(sublinear, i));
        if (flag < 0) return -1;
        self->sublinear[i] = (char)flag;
    }
    return 0;
}

/* One vectorizer's distinct known terms and their l2-normalised tf-idf weights: `*memory` (freed
 * by the caller, NULL when there are none) holds `*distinct` ids and `*weight` values. Returns
 * how many, or -1 with an exception set. */
static Py_ssize_t part_terms(Kernel *self, PyObject *ids, int sublinear, char **memory, Py_ssize_t **distinct,
                             double **weight) {
    *memory = NULL;
    if (!PyList_Check(ids)) {
        PyErr_SetString(PyExc_TypeError, "each vectorizer's feature ids come as a list");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(ids);
    if (n == 0) return 0;
    /* an open-addressed table of distinct ids with their counts; at most half full */
    Py_ssize_t slots = 16;
    while (slots < 2 * n) slots <<= 1;
    size_t bytes = (size_t)slots * sizeof(Py_ssize_t) + (size_t)n * (sizeof(Py_ssize_t) + sizeof(double));
    char *block = malloc(bytes);
    if (block == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t *table = (Py_ssize_t *)block;            /* slot -> position in distinct, or -1 */
    Py_ssize_t *found_ids = table + slots;              /* the distinct ids, first seen first */
    double *count = (double *)(found_ids + n);          /* their counts, then their weights */
    memset(table, 0xff, (size_t)slots * sizeof(Py_ssize_t));
    Py_ssize_t found = 0;
    size_t mask = (size_t)slots - 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t id = PyLong_AsSsize_t(PyList_GET_ITEM(ids, i));
        if (id == -1 && PyErr_Occurred()) goto fail;
        if (id < 0 || id >= self->features - self->dims) {
            PyErr_Format(PyExc_ValueError, "feature id %zd is outside 0..%zd", id, self->features - self->dims - 1);
            goto fail;
        }
        size_t slot = ((size_t)id * 0x9E3779B97F4A7C15ull) >> 20 & mask;
        while (table[slot] >= 0 && found_ids[table[slot]] != id) slot = (slot + 1) & mask;
        if (table[slot] < 0) {
            table[slot] = found;
            found_ids[found] = id;
            count[found] = 1.0;
            found++;
        } else {
            count[table[slot]] += 1.0;
        }
    }
    const double *idf = (const double *)self->idf.buf;
    double squares = 0.0;
    for (Py_ssize_t j = 0; j < found; j++) {
        double tf = sublinear ? log(count[j]) + 1.0 : count[j];
        double w = tf * idf[found_ids[j]];
        count[j] = w;
        squares += w * w;
    }
    if (squares > 0.0) {
        double scale = 1.0 / sqrt(squares);
        for (Py_ssize_t j = 0; j < found; j++) count[j] *= scale;
    } else {
        found = 0;
    }
    *memory = block;
    *distinct = found_ids;
    *weight = count;
    return found;
fail:
    free(block);
    return -1;
}

/* Adds one vectorizer's l2-normalised tf-idf row times the weights to logits. Returns how many
 * distinct known terms it had, or -1 with an exception set. */
static Py_ssize_t add_part(Kernel *self, PyObject *ids, int sublinear, double *logits) {
    char *memory;
    Py_ssize_t *distinct;
    double *count;
    Py_ssize_t found = part_terms(self, ids, sublinear, &memory, &distinct, &count);
    if (found > 0) {
        const float *weights = (const float *)self->weights.buf;
        Py_ssize_t classes = self->classes;
        for (Py_ssize_t j = 0; j < found; j++) {
#if defined(__GNUC__)
            if (j + PREFETCH_AHEAD < found) { /* rows are scattered over a large matrix: ask early */
                const char *ahead = (const char *)(weights + distinct[j + PREFETCH_AHEAD] * classes);
                for (size_t offset = 0; offset < (size_t)classes * sizeof(float); offset += 64) {
                    __builtin_prefetch(ahead + offset);
                }
            }
#endif
            double x = count[j];
            const float *row = weights + distinct[j] * classes;
            for (Py_ssize_t k = 0; k < classes; k++) logits[k] += x * (double)row[k];
        }
    }
    free(memory);
    return found;
}

/* One IEEE half as a float, branch-free so that loops over it vectorise: the exponent and
 * mantissa shifted into place and rescaled by 2^112 (which also makes subnormals right), then
 * infinities and NaNs given the top exponent, then the sign. */
static inline float half_to_float(uint16_t half) {
    union { uint32_t u; float f; } bits, magic = {.u = 0x77800000u}; /* 2^112 */
    bits.u = (uint32_t)(half & 0x7fffu) << 13;
    bits.f *= magic.f;
    bits.u |= (uint32_t)((half & 0x7c00u) == 0x7c00u) * 0x7f800000u;
    bits.u |= (uint32_t)(half & 0x8000u) << 16;
    return bits.f;
}

/* Adds the head's class scores for the unit embedding `unit` (dims floats) to logits: both layers
 * in single precision (as tiers/classifier/head.py computes them, so that the loops vectorise), the
 * scores added in double. Where the compiler can (GCC, x86-64, glibc) it is compiled twice, for
 * CPUs with AVX2 and FMA and for any x86-64, and the first is chosen when the module loads if the
 * CPU has them. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
static int add_head(Kernel *self, const float *unit, double *logits) {
    Py_ssize_t dims = self->dims, hidden = self->hidden, classes = self->classes;
    float small[2048];
    float *layer = hidden + classes <= 2048 ? small : malloc((size_t)(hidden + classes) * sizeof(float));
    if (layer == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    float *restrict hid = layer, *restrict scores = layer + hidden;
    const float *restrict hidden_weights = (const float *)self->head[0].buf;
    memcpy(hid, self->head[1].buf, (size_t)hidden * sizeof(float));
    for (Py_ssize_t d = 0; d < dims; d++) {
        float x = unit[d];
        if (x == 0.0f) continue;
        const float *restrict row = hidden_weights + d * hidden;
        for (Py_ssize_t h = 0; h < hidden; h++) hid[h] += x * row[h];
    }
    const float *restrict out_weights = (const float *)self->head[2].buf;
    memset(scores, 0, (size_t)classes * sizeof(float));
    for (Py_ssize_t h = 0; h < hidden; h++) {
        float x = hid[h];
        if (x <= 0.0f) continue; /* ReLU */
        const float *restrict row = out_weights + h * classes;
        for (Py_ssize_t k = 0; k < classes; k++) scores[k] += x * row[k];
    }
    const double *out_bias = (const double *)self->head[3].buf;
    for (Py_ssize_t k = 0; k < classes; k++) logits[k] += out_bias[k] + (double)scores[k];
    if (layer != small) free(layer);
    return 0;
}

/* Adds the dense view to logits: the pieces' vectors summed in single precision (in order, as
 * tiers/classifier/embeddings.py sums them), l2-normalised in double, times scale and the last dims rows of
 * the weights, then the head's scores if the model has one. No pieces: a zero vector, which adds
 * nothing to the linear part (the head still adds its scores for it). */
/* Sums the word pieces' vectors of `ids` into total (dims floats, zeroed first), in single
 * precision and in order, as tiers/classifier/embeddings.py sums them. Returns the sum of
 * squares (0: no pieces), or -1 with an exception set. */
static double sum_pieces(Kernel *self, PyObject *ids, float *total) {
    if (!PyList_Check(ids)) {
        PyErr_SetString(PyExc_TypeError, "the word pieces' ids come as a list");
        return -1.0;
    }
    Py_ssize_t n = PyList_GET_SIZE(ids), dims = self->dims, rows = self->pieces.shape[0];
    memset(total, 0, (size_t)dims * sizeof(float));
    const uint16_t *vectors = (const uint16_t *)self->pieces.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t id = PyLong_AsSsize_t(PyList_GET_ITEM(ids, i));
        if (id == -1 && PyErr_Occurred()) return -1.0;
        if (id < 0 || id >= rows) {
            PyErr_Format(PyExc_ValueError, "word piece id %zd is outside 0..%zd", id, rows - 1);
            return -1.0;
        }
        const uint16_t *row = vectors + id * dims;
        for (Py_ssize_t d = 0; d < dims; d++) total[d] += half_to_float(row[d]);
    }
    double squares = 0.0;
    for (Py_ssize_t d = 0; d < dims; d++) squares += (double)total[d] * (double)total[d];
    return squares;
}

/* Adds the dense view to logits: the pieces' vectors summed (sum_pieces), l2-normalised in
 * double, times scale and the last dims rows of the weights, then the head's scores if the model
 * has one. No pieces: a zero vector, which adds nothing to the linear part (the head still adds
 * its scores for it). */
static int add_dense(Kernel *self, PyObject *ids, double *logits) {
    Py_ssize_t dims = self->dims;
    if (PyList_Check(ids) && PyList_GET_SIZE(ids) == 0 && self->heads == 0) return 0;
    float small[1024];
    float *total = dims <= 1024 ? small : malloc((size_t)dims * sizeof(float));
    if (total == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    double squares = sum_pieces(self, ids, total);
    if (squares < 0.0) goto fail;
    if (squares > 0.0) {
        double norm = sqrt(squares), factor = self->scale / norm;
        const float *weights = (const float *)self->weights.buf + (self->features - dims) * self->classes;
        Py_ssize_t classes = self->classes;
        for (Py_ssize_t d = 0; d < dims; d++) {
            double x = (double)total[d] * factor;
            const float *row = weights + d * classes;
            for (Py_ssize_t k = 0; k < classes; k++) logits[k] += x * (double)row[k];
        }
        if (self->heads) { /* the unit embedding, which the head reads */
            for (Py_ssize_t d = 0; d < dims; d++) total[d] = (float)((double)total[d] / norm);
        }
    }
    int status = self->heads ? add_head(self, total, logits) : 0;
    if (total != small) free(total);
    return status;
fail:
    if (total != small) free(total);
    return -1;
}

/* The dot product of two float vectors, summed in eight lanes so that the loop vectorises (the
 * order of the additions differs from a plain loop's by rounding only). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
static float dot_product(const float *restrict a, const float *restrict b, Py_ssize_t n) {
    float lanes[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    Py_ssize_t d = 0;
    for (; d + 8 <= n; d += 8)
        for (int k = 0; k < 8; k++) lanes[k] += a[d + k] * b[d + k];
    float sum = 0.0f;
    for (; d < n; d++) sum += a[d] * b[d];
    for (int k = 0; k < 8; k++) sum += lanes[k];
    return sum;
}

/* nearest_embedding(piece_ids, units, first, last) -> float: the cosine similarity of the text's
 * unit embedding to the nearest of rows first..last-1 of `units` (float32, rows x dims, unit
 * rows), as tiers/classifier/neighbours.py computes it; 0.0 for no rows or no pieces. */
static PyObject *Kernel_nearest_embedding(Kernel *self, PyObject *args) {
    PyObject *ids;
    Py_buffer units;
    Py_ssize_t first, last;
    if (!PyArg_ParseTuple(args, "Oy*nn", &ids, &units, &first, &last)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t dims = self->dims;
    float small[1024];
    float *total = small;
    if (dims == 0) {
        PyErr_SetString(PyExc_ValueError, "the kernel has no word pieces");
        goto done;
    }
    Py_ssize_t rows = units.len / (Py_ssize_t)sizeof(float) / dims;
    if (first < 0 || last < first || last > rows) {
        PyErr_SetString(PyExc_ValueError, "rows outside the embeddings");
        goto done;
    }
    if (dims > 1024 && (total = malloc((size_t)dims * sizeof(float))) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    double squares = sum_pieces(self, ids, total);
    if (squares < 0.0) goto done;
    double best = 0.0;
    if (squares > 0.0 && last > first) {
        double norm = sqrt(squares);
        for (Py_ssize_t d = 0; d < dims; d++) total[d] = (float)((double)total[d] / norm);
        const float *row = (const float *)units.buf + first * dims;
        for (Py_ssize_t r = first; r < last; r++, row += dims) {
            float dot = dot_product(row, total, dims);
            if (dot > best) best = dot;
        }
    }
    result = PyFloat_FromDouble(best);
done:
    if (total != small) free(total);
    PyBuffer_Release(&units);
    return result;
}

/* Fills probs (classes doubles) with the softmax of the text's logits; *entropy (if not NULL)
 * with the distribution's entropy in nats, log(sum) - sum(e_k z_k) / sum for e_k = exp(z_k). */
static int fill_probabilities(Kernel *self, PyObject *parts, double *probs, double *entropy) {
    int expected = self->parts + (self->dims > 0);
    if (!PyTuple_Check(parts) || PyTuple_GET_SIZE(parts) != expected) {
        PyErr_Format(PyExc_TypeError, "a tuple of %d lists of feature ids%s is needed", self->parts,
                     self->dims > 0 ? " and one of word piece ids" : "");
        return -1;
    }
    Py_ssize_t classes = self->classes;
    memcpy(probs, self->intercept.buf, (size_t)classes * sizeof(double));
    for (int p = 0; p < self->parts; p++) {
        if (add_part(self, PyTuple_GET_ITEM(parts, p), self->sublinear[p], probs) < 0) return -1;
    }
    if (self->dims > 0 && add_dense(self, PyTuple_GET_ITEM(parts, self->parts), probs) < 0) return -1;
    double top = probs[0];
    for (Py_ssize_t k = 1; k < classes; k++) if (probs[k] > top) top = probs[k];
    double sum = 0.0, weighted = 0.0;
    for (Py_ssize_t k = 0; k < classes; k++) {
        double z = probs[k] - top;
        probs[k] = exp(z);
        sum += probs[k];
        weighted += probs[k] * z;
    }
    for (Py_ssize_t k = 0; k < classes; k++) probs[k] /= sum;
    if (entropy != NULL) *entropy = log(sum) - weighted / sum;
    return 0;
}

static PyObject *Kernel_probabilities(Kernel *self, PyObject *args) {
    PyObject *parts;
    Py_buffer out;
    if (!PyArg_ParseTuple(args, "Ow*", &parts, &out)) return NULL;
    if (out.len != (Py_ssize_t)(self->classes * sizeof(double)) || out.itemsize != sizeof(double)) {
        PyBuffer_Release(&out);
        PyErr_Format(PyExc_ValueError, "out: room for %zd doubles is needed", self->classes);
        return NULL;
    }
    int status = fill_probabilities(self, parts, (double *)out.buf, NULL);
    PyBuffer_Release(&out);
    if (status < 0) return NULL;
    Py_RETURN_NONE;
}

/* (best, top, runner_up, entropy): the most likely class other than `excluded` (-1: none excluded;
 * ties go to the first), its probability, the largest other one (the excluded class included; 0.0
 * with one class) and the entropy of all the probabilities. */
static PyObject *Kernel_decide(Kernel *self, PyObject *args) {
    PyObject *parts;
    Py_ssize_t excluded;
    if (!PyArg_ParseTuple(args, "On", &parts, &excluded)) return NULL;
    Py_ssize_t classes = self->classes;
    if (excluded < -1 || excluded >= classes || (excluded >= 0 && classes < 2)) {
        PyErr_Format(PyExc_ValueError, "excluded class %zd is outside -1..%zd", excluded, classes - 1);
        return NULL;
    }
    double small[256];
    double *probs = classes <= 256 ? small : malloc((size_t)classes * sizeof(double));
    if (probs == NULL) return PyErr_NoMemory();
    PyObject *result = NULL;
    double entropy;
    if (fill_probabilities(self, parts, probs, &entropy) == 0) {
        Py_ssize_t best = excluded == 0 ? 1 : 0;
        for (Py_ssize_t k = best + 1; k < classes; k++) {
            if (k != excluded && probs[k] > probs[best]) best = k;
        }
        double runner = 0.0;
        for (Py_ssize_t k = 0; k < classes; k++) {
            if (k != best && probs[k] > runner) runner = probs[k];
        }
        result = Py_BuildValue("nddd", best, probs[best], runner, entropy);
    }
    if (probs != small) free(probs);
    return result;
}

/* nearest(parts, values, indices, indptr, first, last) -> float: the cosine similarity of the text
 * (its stacked tf-idf vector, from `parts` as decide takes them) to the nearest of the rows
 * first..last-1 of a CSR matrix of unit-length rows (values float32, indices int32, indptr int64),
 * as tiers/classifier/neighbours.py computes it; 0.0 for no rows or no known terms. The text's
 * weights go into a scratch row of the kernel (the GIL is held throughout) and are cleared after. */
static PyObject *Kernel_nearest(Kernel *self, PyObject *args) {
    PyObject *parts;
    Py_buffer values, indices, indptr;
    Py_ssize_t first, last;
    if (!PyArg_ParseTuple(args, "Oy*y*y*nn", &parts, &values, &indices, &indptr, &first, &last)) return NULL;
    PyObject *result = NULL;
    char *memory[MAX_PARTS] = {NULL};
    Py_ssize_t rows = indptr.len / (Py_ssize_t)sizeof(int64_t) - 1;
    Py_ssize_t sparse = self->features - self->dims;
    if (!PyTuple_Check(parts) || PyTuple_GET_SIZE(parts) < self->parts) {
        PyErr_Format(PyExc_TypeError, "a tuple of %d lists of feature ids is needed", self->parts);
        goto done;
    }
    if (first < 0 || last < first || last > rows || values.len / (Py_ssize_t)sizeof(float) !=
        indices.len / (Py_ssize_t)sizeof(int32_t)) {
        PyErr_SetString(PyExc_ValueError, "rows outside the matrix, or values and indices of other lengths");
        goto done;
    }
    if (self->scratch == NULL) {
        self->scratch = calloc((size_t)sparse, sizeof(float));
        if (self->scratch == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    Py_ssize_t *distinct[MAX_PARTS];
    double *weight[MAX_PARTS];
    Py_ssize_t found[MAX_PARTS];
    double squares = 0.0;
    for (int p = 0; p < self->parts; p++) {
        found[p] = part_terms(self, PyTuple_GET_ITEM(parts, p), self->sublinear[p], &memory[p], &distinct[p], &weight[p]);
        if (found[p] < 0) goto done;
        if (found[p] > 0) squares += 1.0; /* each part is unit length */
    }
    double best = 0.0;
    if (squares > 0.0 && last > first) {
        double norm = 1.0 / sqrt(squares);
        for (int p = 0; p < self->parts; p++)
            for (Py_ssize_t j = 0; j < found[p]; j++) self->scratch[distinct[p][j]] += (float)(weight[p][j] * norm);
        const float *v = (const float *)values.buf;
        const int32_t *col = (const int32_t *)indices.buf;
        const int64_t *ptr = (const int64_t *)indptr.buf;
        Py_ssize_t entries = values.len / (Py_ssize_t)sizeof(float);
        int valid = 1;
        for (Py_ssize_t r = first; r < last && valid; r++) {
            if (ptr[r] < 0 || ptr[r + 1] < ptr[r] || ptr[r + 1] > entries) {
                valid = 0;
                break;
            }
            float dot = 0.0f;
            for (int64_t j = ptr[r]; j < ptr[r + 1]; j++) {
                int32_t c = col[j];
                if (c < 0 || c >= sparse) {
                    valid = 0;
                    break;
                }
                dot += v[j] * self->scratch[c];
            }
            if (dot > best) best = dot;
        }
        for (int p = 0; p < self->parts; p++)
            for (Py_ssize_t j = 0; j < found[p]; j++) self->scratch[distinct[p][j]] = 0.0f;
        if (!valid) {
            PyErr_SetString(PyExc_ValueError, "a row's offsets or feature ids are outside the matrix");
            goto done;
        }
    }
    result = PyFloat_FromDouble(best);
done:
    for (int p = 0; p < MAX_PARTS; p++) free(memory[p]);
    PyBuffer_Release(&values);
    PyBuffer_Release(&indices);
    PyBuffer_Release(&indptr);
    return result;
}

static PyMethodDef Kernel_methods[] = {
    {"nearest_embedding", (PyCFunction)Kernel_nearest_embedding, METH_VARARGS,
     "nearest_embedding(piece_ids, units, first, last) -> float: the text's embedding's cosine similarity"
     " to the nearest of rows first..last-1 of unit embeddings."},
    {"nearest", (PyCFunction)Kernel_nearest, METH_VARARGS,
     "nearest(parts, values, indices, indptr, first, last) -> float: the text's cosine similarity to the"
     " nearest of rows first..last-1 of a CSR matrix of unit rows."},
    {"probabilities", (PyCFunction)Kernel_probabilities, METH_VARARGS,
     "probabilities(parts, out): the class probabilities of a text into out (float64, one per class)."},
    {"decide", (PyCFunction)Kernel_decide, METH_VARARGS,
     "decide(parts, excluded) -> (best, top, runner_up, entropy): the best class other than excluded"
     " (-1: none), its probability, the largest other one and the probabilities' entropy."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject KernelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tiers._lean.Kernel",
    .tp_doc = PyDoc_STR(
        "Kernel(weights, intercept, idf, sublinear, pieces=None, scale=0.0, head=None): a fitted linear"
        " model over stacked tf-idf features. weights: float32 features x classes; intercept: float64 per class;"
        " idf: float64 per tf-idf feature; sublinear: one flag per vectorizer; pieces: float16 word"
        " piece vectors (as uint16 bits) for a dense view weighted by scale, whose coefficients are the"
        " weights' last rows; head: (hidden weights, hidden bias, out weights, out bias) of a network"
        " over the unit embedding whose scores are added. A text is passed as a tuple with one list of"
        " feature ids per vectorizer (ids offset into the stacked features, repeats included), then, with pieces, its word"
        " pieces' ids."),
    .tp_basicsize = sizeof(Kernel),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Kernel_init,
    .tp_dealloc = (destructor)Kernel_dealloc,
    .tp_methods = Kernel_methods,
};

/* nearest_all(values, indices, indptr, postings, posted_rows, postings_indptr, starts, out): for
 * each of many texts (a CSR matrix of unit-length rows: values float32, indices int32, indptr
 * int64) the cosine similarity to the nearest training row of every label, into out (float64,
 * texts x labels, C order): the training rows as postings by feature (a CSR matrix of features x
 * rows: postings float32, posted_rows int32, postings_indptr int64), label k's rows being
 * starts[k]..starts[k+1]-1 (int64). Training scores its held rows this way (neighbours.py's
 * `nearest`); one dense row of products per text, summed in the order SciPy's sparse product
 * sums them, so both give the same figures. The GIL is released while it runs. */
static PyObject *nearest_all(PyObject *module, PyObject *args) {
    Py_buffer values, indices, indptr, postings, posted, posted_ptr, starts, out;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*w*", &values, &indices, &indptr, &postings, &posted,
                          &posted_ptr, &starts, &out))
        return NULL;
    PyObject *result = NULL;
    float *acc = NULL;
    Py_ssize_t texts = indptr.len / (Py_ssize_t)sizeof(int64_t) - 1;
    Py_ssize_t features = posted_ptr.len / (Py_ssize_t)sizeof(int64_t) - 1;
    Py_ssize_t labels = starts.len / (Py_ssize_t)sizeof(int64_t) - 1;
    Py_ssize_t entries = values.len / (Py_ssize_t)sizeof(float);
    Py_ssize_t posted_entries = postings.len / (Py_ssize_t)sizeof(float);
    const int64_t *start = (const int64_t *)starts.buf;
    const int64_t *ptr = (const int64_t *)indptr.buf;
    const int64_t *pptr = (const int64_t *)posted_ptr.buf;
    if (texts < 0 || features < 0 || labels < 1 || indices.len / (Py_ssize_t)sizeof(int32_t) != entries ||
        posted.len / (Py_ssize_t)sizeof(int32_t) != posted_entries ||
        out.len != texts * labels * (Py_ssize_t)sizeof(double) || start[0] != 0) {
        PyErr_SetString(PyExc_ValueError, "arrays of inconsistent lengths");
        goto done;
    }
    Py_ssize_t rows = (Py_ssize_t)start[labels];
    for (Py_ssize_t k = 0; k < labels; k++)
        if (start[k + 1] < start[k]) {
            PyErr_SetString(PyExc_ValueError, "label starts must not decrease");
            goto done;
        }
    if (ptr[0] != 0 || ptr[texts] != entries || pptr[0] != 0 || pptr[features] != posted_entries) {
        PyErr_SetString(PyExc_ValueError, "offsets outside the matrices");
        goto done;
    }
    for (Py_ssize_t i = 0; i < texts; i++)
        if (ptr[i + 1] < ptr[i]) {
            PyErr_SetString(PyExc_ValueError, "offsets outside the matrices");
            goto done;
        }
    for (Py_ssize_t f = 0; f < features; f++)
        if (pptr[f + 1] < pptr[f]) {
            PyErr_SetString(PyExc_ValueError, "offsets outside the matrices");
            goto done;
        }
    const int32_t *col = (const int32_t *)indices.buf;
    const int32_t *prow = (const int32_t *)posted.buf;
    for (Py_ssize_t j = 0; j < entries; j++)
        if (col[j] < 0 || col[j] >= features) {
            PyErr_SetString(PyExc_ValueError, "a feature id outside the postings");
            goto done;
        }
    for (Py_ssize_t q = 0; q < posted_entries; q++)
        if (prow[q] < 0 || prow[q] >= rows) {
            PyErr_SetString(PyExc_ValueError, "a posted row outside the labels' rows");
            goto done;
        }
    acc = calloc(rows > 0 ? (size_t)rows : 1, sizeof(float));
    if (acc == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const float *v = (const float *)values.buf;
    const float *pv = (const float *)postings.buf;
    double *o = (double *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < texts; i++) {
        memset(acc, 0, (size_t)rows * sizeof(float));
        for (int64_t j = ptr[i]; j < ptr[i + 1]; j++) {
            float w = v[j];
            int32_t f = col[j];
            for (int64_t q = pptr[f]; q < pptr[f + 1]; q++) acc[prow[q]] += w * pv[q];
        }
        for (Py_ssize_t k = 0; k < labels; k++) {
            float best = 0.0f;
            int64_t lo = start[k], hi = start[k + 1];
            if (lo < hi) {
                best = acc[lo];
                for (int64_t r = lo + 1; r < hi; r++)
                    if (acc[r] > best) best = acc[r];
            }
            o[i * labels + k] = (double)best;
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    free(acc);
    PyBuffer_Release(&values);
    PyBuffer_Release(&indices);
    PyBuffer_Release(&indptr);
    PyBuffer_Release(&postings);
    PyBuffer_Release(&posted);
    PyBuffer_Release(&posted_ptr);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef lean_functions[] = {
    {"nearest_all", (PyCFunction)nearest_all, METH_VARARGS,
     "nearest_all(values, indices, indptr, postings, posted_rows, postings_indptr, starts, out): each"
     " text's cosine similarity to every label's nearest training row, into out (texts x labels)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef lean_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tiers.classifier._lean",
    .m_doc = "The classifier tier's per-text arithmetic, compiled.",
    .m_size = -1,
    .m_methods = lean_functions,
};

PyMODINIT_FUNC PyInit__lean(void) {
    if (PyType_Ready(&KernelType) < 0) return NULL;
    PyObject *module = PyModule_Create(&lean_module);
    if (module == NULL) return NULL;
    Py_INCREF(&KernelType);
    if (PyModule_AddObject(module, "Kernel", (PyObject *)&KernelType) < 0) {
        Py_DECREF(&KernelType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
