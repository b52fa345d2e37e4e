/* blasgemm._blasgemm: matmul(a, b) via OpenBLAS's cblas_dgemm; threads() -> OpenBLAS threads.
 * The scipy-openblas headers declare every symbol with the scipy_ prefix. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <cblas.h>

/* A non-empty list or tuple of equally long, non-empty rows of numbers, as a new row-major
 * double array (PyMem_Free it); NULL on error. Reads tuple snapshots, so a number's
 * __float__ cannot resize what is being read. */
static double *
to_matrix(PyObject *obj, const char *what, Py_ssize_t *rows, Py_ssize_t *cols)
{
    if (!PyList_Check(obj) && !PyTuple_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list of rows, not %.100s",
                     what, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyObject *outer = PySequence_Tuple(obj);
    if (outer == NULL)
        return NULL;
    double *out = NULL;
    *rows = PyTuple_GET_SIZE(outer);
    *cols = 0;
    for (Py_ssize_t i = 0; i < *rows; i++) {
        PyObject *row = PyTuple_GET_ITEM(outer, i);
        if (!PyList_Check(row) && !PyTuple_Check(row)) {
            PyErr_Format(PyExc_TypeError, "%s[%zd] must be a list of numbers, not %.100s",
                         what, i, Py_TYPE(row)->tp_name);
            goto fail;
        }
        PyObject *items = PySequence_Tuple(row);
        if (items == NULL)
            goto fail;
        Py_ssize_t n = PyTuple_GET_SIZE(items);
        if (i == 0) {
            *cols = n;
            if (n == 0)
                PyErr_Format(PyExc_ValueError, "%s[0] is empty; use a non-empty matrix", what);
            else if (*rows > INT_MAX || n > INT_MAX
                     || *rows > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(double) / n)
                PyErr_Format(PyExc_ValueError, "%s (%zd x %zd) is too large", what, *rows, n);
            if (PyErr_Occurred()) {
                Py_DECREF(items);
                goto fail;
            }
            out = PyMem_New(double, *rows * n);
            if (out == NULL) {
                PyErr_NoMemory();
                Py_DECREF(items);
                goto fail;
            }
        }
        else if (n != *cols) {
            PyErr_Format(PyExc_ValueError, "%s[%zd] has %zd items, %s[0] has %zd",
                         what, i, n, what, *cols);
            Py_DECREF(items);
            goto fail;
        }
        for (Py_ssize_t j = 0; j < n; j++) {
            PyObject *item = PyTuple_GET_ITEM(items, j);
            if (!PyFloat_Check(item) && !PyLong_Check(item))
                PyErr_Format(PyExc_TypeError, "%s[%zd][%zd] must be a number, not %.100s",
                             what, i, j, Py_TYPE(item)->tp_name);
            else
                out[i * n + j] = PyFloat_AsDouble(item); /* OverflowError for a huge int */
            if (PyErr_Occurred()) {
                Py_DECREF(items);
                goto fail;
            }
        }
        Py_DECREF(items);
    }
    if (*rows == 0) {
        PyErr_Format(PyExc_ValueError, "%s is empty; use a non-empty matrix", what);
        goto fail;
    }
    Py_DECREF(outer);
    return out;
fail:
    PyMem_Free(out);
    Py_DECREF(outer);
    return NULL;
}

static PyObject *
matmul(PyObject *self, PyObject *args)
{
    PyObject *a_obj, *b_obj, *result = NULL;
    Py_ssize_t m, k, k2, n;
    double *a = NULL, *b = NULL, *c = NULL;
    if (!PyArg_ParseTuple(args, "OO:matmul", &a_obj, &b_obj))
        return NULL;
    a = to_matrix(a_obj, "a", &m, &k);
    if (a == NULL || (b = to_matrix(b_obj, "b", &k2, &n)) == NULL)
        goto done;
    if (k != k2) {
        PyErr_Format(PyExc_ValueError, "cannot multiply a (%zd x %zd) by b (%zd x %zd)",
                     m, k, k2, n);
        goto done;
    }
    if (m > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(double) / n
        || (c = PyMem_New(double, m * n)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    scipy_cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)n,
                      (blasint)k, 1.0, a, (blasint)k, b, (blasint)n, 0.0, c, (blasint)n);
    if ((result = PyList_New(m)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < m; i++) {
        PyObject *row = PyList_New(n);
        if (row == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, row);
        for (Py_ssize_t j = 0; j < n; j++) {
            PyObject *x = PyFloat_FromDouble(c[i * n + j]);
            if (x == NULL) {
                Py_CLEAR(result);
                goto done;
            }
            PyList_SET_ITEM(row, j, x);
        }
    }
done:
    PyMem_Free(a);
    PyMem_Free(b);
    PyMem_Free(c);
    return result;
}

static PyObject *
threads(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(scipy_openblas_get_num_threads());
}

static PyMethodDef methods[] = {
    {"matmul", matmul, METH_VARARGS,
     "matmul(a, b) -> list of lists: the product of two matrices given as lists of rows."},
    {"threads", threads, METH_NOARGS, "threads() -> int: OpenBLAS's number of threads."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "blasgemm._blasgemm",
    .m_doc = "OpenBLAS matrix product.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__blasgemm(void)
{
    return PyModule_Create(&module);
}
