# cython: language_level=3
"""Flat JSON numbers into a preallocated float array, at C speed (twin: ``_decode_py.py``).

``fill_floats(data, out)`` writes ``data`` (a list of Python floats and ints, as orjson
parses a flat V2 ``data`` array) into the 1-D float32 or float64 array ``out`` of the same
length: 0 when every value is finite once cast, 1 when one is not (overflow to ±Inf), -1
when ``data`` holds anything else (a bool, a string, a list, an int beyond int64) or
``out`` does not fit — the caller then takes the general numpy path, which decides.
Each value is cast once, as numpy casts it: a float from double, an int from int64.
"""

cimport numpy as cnp
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.math cimport isfinite

cnp.import_array()


def fill_floats(list data, cnp.ndarray out):
    cdef Py_ssize_t i, n = len(data)
    cdef object v
    cdef long long ll
    cdef int overflow = 0
    cdef bint finite = True
    cdef float f
    cdef double d
    cdef float* f32
    cdef double* f64
    if cnp.PyArray_NDIM(out) != 1 or cnp.PyArray_DIM(out, 0) != n:
        return -1
    if not cnp.PyArray_IS_C_CONTIGUOUS(out):
        return -1
    if cnp.PyArray_TYPE(out) == cnp.NPY_FLOAT32:
        f32 = <float*>cnp.PyArray_DATA(out)
        for i in range(n):
            v = data[i]
            if type(v) is float:
                f = <float>PyFloat_AS_DOUBLE(v)
            elif type(v) is int:
                ll = PyLong_AsLongLongAndOverflow(v, &overflow)
                if overflow:
                    return -1
                f = <float>ll
            else:
                return -1
            f32[i] = f
            if not isfinite(f):
                finite = False
        return 0 if finite else 1
    if cnp.PyArray_TYPE(out) == cnp.NPY_FLOAT64:
        f64 = <double*>cnp.PyArray_DATA(out)
        for i in range(n):
            v = data[i]
            if type(v) is float:
                d = PyFloat_AS_DOUBLE(v)
            elif type(v) is int:
                ll = PyLong_AsLongLongAndOverflow(v, &overflow)
                if overflow:
                    return -1
                d = <double>ll
            else:
                return -1
            f64[i] = d
            if not isfinite(d):
                finite = False
        return 0 if finite else 1
    return -1
