"""Counts of a ``ModelInferRequest``'s top-level repeated fields read from its wire bytes,
without the GIL and without building a message (``wire.py`` is the shim)."""

from libc.stdint cimport uint64_t


cdef inline Py_ssize_t _varint(const unsigned char[::1] data, Py_ssize_t i, Py_ssize_t n,
                               uint64_t* out) noexcept nogil:
    cdef uint64_t value = 0
    cdef int shift = 0
    cdef unsigned char b
    while i < n and shift < 64:
        b = data[i]
        i += 1
        value |= (<uint64_t>(b & 0x7F)) << shift
        if b < 0x80:
            out[0] = value
            return i
        shift += 7
    return -1


def field_counts(const unsigned char[::1] data):
    """(parameters, inputs, outputs, raw_input_contents) entries in ``data`` and the spans
    (start, end) of model_name and model_version (the last of each, as a parser keeps; -1:
    absent); None when the bytes are not a protobuf message (the parser says what is wrong)."""
    cdef Py_ssize_t n = data.shape[0]
    cdef Py_ssize_t i = 0
    cdef uint64_t tag = 0, value = 0, field, wire
    cdef long long parameters = 0, inputs = 0, outputs = 0, raw = 0
    cdef Py_ssize_t name_at = -1, name_end = -1, version_at = -1, version_end = -1
    cdef bint bad = False
    with nogil:
        while i < n:
            i = _varint(data, i, n, &tag)
            if i < 0:
                bad = True
                break
            field = tag >> 3
            wire = tag & 7
            if wire == 0:
                i = _varint(data, i, n, &value)
            elif wire == 1:
                i += 8
            elif wire == 5:
                i += 4
            elif wire == 2:
                i = _varint(data, i, n, &value)
                if i >= 0:
                    if value > <uint64_t>(n - i):
                        bad = True
                        break
                    if field == 1:
                        name_at, name_end = i, i + <Py_ssize_t>value
                    elif field == 2:
                        version_at, version_end = i, i + <Py_ssize_t>value
                    i += <Py_ssize_t>value
            else:
                bad = True
                break
            if i < 0 or i > n:
                bad = True
                break
            if field == 4:
                parameters += 1
            elif field == 5:
                inputs += 1
            elif field == 6:
                outputs += 1
            elif field == 7:
                raw += 1
    if bad:
        return None
    return parameters, inputs, outputs, raw, name_at, name_end, version_at, version_end
