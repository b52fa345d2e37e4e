/* blasdot._blasdot: dot(a, b) via OpenBLAS's cblas_ddot; config() -> OpenBLAS build string.
 * The scipy-openblas headers declare every symbol with the scipy_ prefix. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <cblas.h>

/* The items of a list or tuple as a new double array (PyMem_Free it); NULL on error.
 * Reads a tuple snapshot: a number's __float__ cannot resize what is being read. */
static double *
to_doubles(PyObject *seq, const char *what, Py_ssize_t *n)
{
    if (!PyList_Check(seq) && !PyTuple_Check(seq)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list or tuple of numbers, not %.100s",
                     what, Py_TYPE(seq)->tp_name);
        return NULL;
    }
    PyObject *items = PySequence_Tuple(seq);
    if (items == NULL)
        return NULL;
    double *out = NULL;
    *n = PyTuple_GET_SIZE(items);
    if (*n > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s has more than %d items", what, INT_MAX);
        goto done;
    }
    out = PyMem_New(double, *n ? *n : 1);
    if (out == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i);
        if (!PyFloat_Check(item) && !PyLong_Check(item)) {
            PyErr_Format(PyExc_TypeError, "%s[%zd] must be a number, not %.100s",
                         what, i, Py_TYPE(item)->tp_name);
        }
        else {
            out[i] = PyFloat_AsDouble(item); /* OverflowError for a huge int */
        }
        if (PyErr_Occurred()) {
            PyMem_Free(out);
            out = NULL;
            goto done;
        }
    }
done:
    Py_DECREF(items);
    return out;
}

static PyObject *
dot(PyObject *self, PyObject *args)
{
    PyObject *a_obj, *b_obj;
    Py_ssize_t n, m;
    if (!PyArg_ParseTuple(args, "OO:dot", &a_obj, &b_obj))
        return NULL;
    double *a = to_doubles(a_obj, "a", &n);
    if (a == NULL)
        return NULL;
    double *b = to_doubles(b_obj, "b", &m);
    if (b == NULL) {
        PyMem_Free(a);
        return NULL;
    }
    if (n != m) {
        PyErr_Format(PyExc_ValueError, "a and b differ in length (%zd and %zd)", n, m);
        PyMem_Free(a);
        PyMem_Free(b);
        return NULL;
    }
    double r = scipy_cblas_ddot((blasint)n, a, 1, b, 1);
    PyMem_Free(a);
    PyMem_Free(b);
    return PyFloat_FromDouble(r);
}

static PyObject *
config(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyUnicode_FromString(scipy_openblas_get_config());
}

static PyMethodDef methods[] = {
    {"dot", dot, METH_VARARGS, "dot(a, b) -> float: the dot product of two lists of numbers."},
    {"config", config, METH_NOARGS, "config() -> str: the OpenBLAS build configuration."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "blasdot._blasdot",
    .m_doc = "OpenBLAS dot product.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__blasdot(void)
{
    return PyModule_Create(&module);
}
