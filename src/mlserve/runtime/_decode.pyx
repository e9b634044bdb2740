# cython: language_level=3
"""Flat JSON numbers into a preallocated float array, at C speed (twin: ``_decode_py.py``).

``fill_floats(data, out)`` writes ``data`` (a list of Python floats and ints, as orjson
parses a flat V2 ``data`` array) into the 1-D float32 or float64 array ``out`` of the same
length: 0 when every value is finite once cast, 1 when one is not (overflow to ±Inf), -1
when ``data`` holds anything else (a bool, a string, a list, an int beyond int64) or
``out`` does not fit — the caller then takes the general numpy path, which decides.
Each value is cast once, as numpy casts it: a float from double, an int from int64.

``decode_bytes(blob, count)`` splits a binary BYTES tensor (each element a 4-byte
little-endian length and that many bytes of UTF-8) into a 1-D object array of ``count``
str, or, when the blob is broken, returns what is wrong as a tuple (``binary.py`` words it):
``("short", i)`` the data ends after ``i`` whole elements, ``("claims", i, length, remain)``
element ``i`` claims more bytes than remain, ``("utf8", i)`` element ``i`` is not UTF-8,
``("left", n)`` ``n`` bytes follow the last element. The first problem in element order is
the one returned, as the element-by-element Python loop found it. The framing is checked
first, without the GIL and without allocating (a claim of millions of elements in a short
blob costs nothing); then each element is decoded by CPython's own UTF-8 decoder, so what
is valid UTF-8 is exactly what ``bytes.decode("utf-8")`` accepts.

``json_counts(data, max_containers, max_tokens, max_depth)`` counts, outside JSON
strings, the containers (``{`` and ``[``) and the tokens (1 + containers + ``,`` + ``:``,
an upper bound on the values and keys a parser makes of ``data``), without the GIL, and
returns ``(containers, tokens, deep_at)``. It stops at the first bracket that opens more
than ``max_depth`` levels (``deep_at`` is its byte offset, else -1) or that takes either
count past its maximum (the counts, one of them over, are then where it stopped). Strings
run from ``"`` to the next ``"`` not escaped by a backslash (an unterminated one to the
end); ``}`` and ``]`` close a level; nothing else is validated.
"""

cimport numpy as cnp
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.math cimport isfinite
from libc.string cimport memcpy


cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object o)

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


cdef inline Py_ssize_t _le32(const unsigned char* p) noexcept nogil:
    return <Py_ssize_t>(p[0] | (p[1] << 8) | (p[2] << 16) | (<unsigned int>p[3] << 24))


cdef inline bint _ascii(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef unsigned char seen = 0
    cdef Py_ssize_t i
    for i in range(n):
        seen |= p[i]
    return seen < 128


def decode_bytes(const unsigned char[::1] blob, Py_ssize_t count):
    cdef Py_ssize_t end = blob.shape[0]
    cdef Py_ssize_t offset = 0, length = 0, i = 0, whole
    cdef const unsigned char* p = NULL
    cdef object failure = None
    cdef object item
    cdef object empty = ""
    cdef cnp.ndarray out = None
    cdef cnp.npy_intp dims[1]
    cdef PyObject** slots = NULL
    cdef PyObject* old
    if end:
        p = &blob[0]
    # 1. Framing: how many elements are whole, and what is wrong after them.
    with nogil:
        while i < count:
            if end - offset < 4:
                break
            length = _le32(p + offset)
            if length > end - offset - 4:
                break
            offset += 4 + length
            i += 1
    whole = i
    if whole < count:
        if end - offset < 4:
            failure = ("short", whole)
        else:
            failure = ("claims", whole, length, end - offset - 4)
    elif offset != end:
        failure = ("left", end - offset)
    else:
        dims[0] = count
        out = cnp.PyArray_SimpleNew(1, dims, cnp.NPY_OBJECT)
        slots = <PyObject**>cnp.PyArray_DATA(out)
    # 2. Text: each whole element decoded; a bad one before the framing problem comes first.
    offset = 0
    for i in range(whole):
        length = _le32(p + offset)
        offset += 4
        if length == 0:
            item = empty
        elif length > 1 and _ascii(p + offset, length):  # most text: no decoder needed
            item = PyUnicode_New(length, 127)
            memcpy(PyUnicode_DATA(item), p + offset, length)
        else:
            try:
                item = PyUnicode_DecodeUTF8(<const char*>(p + offset), length, NULL)
            except UnicodeDecodeError:
                return ("utf8", i)
        offset += length
        if slots != NULL:
            Py_INCREF(item)
            old = slots[i]
            slots[i] = <PyObject*>item
            Py_XDECREF(old)
    if failure is not None:
        return failure
    return out


# Bytes the scanner stops at, outside strings (" { [ } ] , :) and inside them (" and \\).
cdef unsigned char _PLAIN[256]
cdef unsigned char _IN_STRING[256]
for _c in (34, 123, 91, 125, 93, 44, 58):
    _PLAIN[_c] = 1
for _c in (34, 92):
    _IN_STRING[_c] = 1


def json_counts(const unsigned char[::1] data, Py_ssize_t max_containers,
                Py_ssize_t max_tokens, Py_ssize_t max_depth):
    cdef Py_ssize_t n = data.shape[0], i = 0, containers = 0, tokens = 1
    cdef Py_ssize_t depth = 0, deep_at = -1
    cdef const unsigned char* p
    cdef unsigned char c
    if n == 0:
        return containers, tokens, deep_at
    p = &data[0]
    with nogil:
        while i < n:
            c = p[i]
            if not _PLAIN[c]:
                i += 1
                continue
            if c == 34:  # "
                i += 1
                while i < n:
                    c = p[i]
                    if not _IN_STRING[c]:
                        i += 1
                        continue
                    if c == 92:  # backslash: the next byte is escaped, whatever it is
                        i += 2
                        continue
                    break  # the closing quote
            elif c == 123 or c == 91:  # { [
                containers += 1
                tokens += 1
                depth += 1
                if depth > max_depth:
                    deep_at = i
                    break
                if containers > max_containers or tokens > max_tokens:
                    break
            elif c == 125 or c == 93:  # } ]
                if depth:
                    depth -= 1
            else:  # , :
                tokens += 1
                if tokens > max_tokens:
                    break
            i += 1
    return containers, tokens, deep_at
