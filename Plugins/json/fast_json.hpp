// Shared by the JSON plugin's simdjson decoders (v2_fast.cpp, rows_fast.cpp): element access with
// jansson's semantics, the per-datatype element writer, and the parse that hands a document back to
// the jansson decoders whenever they must judge it. Each decoder either produces exactly what its
// jansson twin produces, host call for host call, or throws Fallback before the host saw anything
// that would stay (the host keeps the last error and drops a failed request's tensors).
#ifndef MLP_FAST_JSON_HPP
#define MLP_FAST_JSON_HPP

#include <simdjson.h>

#include <cstring>
#include <string_view>

extern "C" {
#include "mlp_json.h"
#include "mlp_plugin_util.h"
}

namespace fast_json {

using simdjson::dom::element;
using simdjson::dom::element_type;

// Not an error: "let the jansson decoder decide".
struct Fallback {};

// An array's or object's view, by value (iterating a temporary result's value would dangle).
inline simdjson::dom::array array_of(element e) {
    simdjson::dom::array a;
    if (e.get(a)) throw Fallback{};
    return a;
}
inline simdjson::dom::object object_of(element e) {
    simdjson::dom::object o;
    if (e.get(o)) throw Fallback{};
    return o;
}

// jansson keeps the last of duplicate keys; simdjson's at_key would give the first.
inline bool member(element obj, std::string_view key, element &out) {
    bool found = false;
    for (auto field : object_of(obj)) {
        if (field.key == key) {
            out = field.value;
            found = true;
        }
    }
    return found;
}

inline bool is_integer(element e) {
    return e.type() == element_type::INT64;
}
inline bool is_number(element e) {
    return e.type() == element_type::INT64 || e.type() == element_type::DOUBLE;
}
inline std::string_view str(element e) {
    return e.get_string().value_unsafe();
}
inline mlp_bytes bytes_of(std::string_view s) {
    return mlp_bytes{reinterpret_cast<const uint8_t *>(s.data()), s.size()};
}

inline void check(mlp_status s) {
    if (s != MLP_OK) throw Fallback{};
}

// The integer range of an integer datatype (UINT64's is int64's: jansson reads no more).
inline void range_of(uint32_t dt, int64_t &lo, int64_t &hi) {
    switch (dt) {
    case MLP_DT_UINT8: lo = 0, hi = UINT8_MAX; break;
    case MLP_DT_UINT16: lo = 0, hi = UINT16_MAX; break;
    case MLP_DT_UINT32: lo = 0, hi = UINT32_MAX; break;
    case MLP_DT_UINT64: lo = 0, hi = INT64_MAX; break;
    case MLP_DT_INT8: lo = INT8_MIN, hi = INT8_MAX; break;
    case MLP_DT_INT16: lo = INT16_MIN, hi = INT16_MAX; break;
    case MLP_DT_INT32: lo = INT32_MIN, hi = INT32_MAX; break;
    default: lo = INT64_MIN, hi = INT64_MAX; break;
    }
}

// Element writers: one per datatype, as write_leaf in json_text.c.
struct Leaves {
    uint32_t dt;
    uint8_t *out;
    size_t left; // elements the buffer still holds
    size_t es;
    int64_t lo, hi;
};

inline void write_leaf(Leaves &w, element v) {
    if (w.left == 0) throw Fallback{}; // more data than the shape says
    w.left--;
    uint8_t *p = w.out;
    switch (w.dt) {
    case MLP_DT_FP32: {
        float f;
        if (v.type() == element_type::DOUBLE)
            f = static_cast<float>(v.get_double().value_unsafe());
        else if (v.type() == element_type::INT64)
            f = static_cast<float>(static_cast<double>(v.get_int64().value_unsafe()));
        else
            throw Fallback{};
        memcpy(p, &f, 4);
        break;
    }
    case MLP_DT_FP64: {
        double d;
        if (v.type() == element_type::DOUBLE)
            d = v.get_double().value_unsafe();
        else if (v.type() == element_type::INT64)
            d = static_cast<double>(v.get_int64().value_unsafe());
        else
            throw Fallback{};
        memcpy(p, &d, 8);
        break;
    }
    case MLP_DT_FP16: {
        if (!is_number(v)) throw Fallback{};
        double d = v.type() == element_type::DOUBLE ? v.get_double().value_unsafe()
                                                    : static_cast<double>(v.get_int64().value_unsafe());
        uint16_t h = half_from_float(static_cast<float>(d));
        memcpy(p, &h, 2);
        break;
    }
    case MLP_DT_BOOL:
        if (v.type() != element_type::BOOL) throw Fallback{};
        p[0] = v.get_bool().value_unsafe() ? 1 : 0;
        break;
    default: {
        if (!is_integer(v)) throw Fallback{};
        int64_t i = v.get_int64().value_unsafe();
        if (i < w.lo || i > w.hi) throw Fallback{};
        memcpy(p, &i, w.es); // little-endian: the low bytes are the element
        break;
    }
    }
    w.out += w.es;
}

inline Leaves leaves_for(uint32_t dt, uint8_t *out, size_t count) {
    Leaves w = {dt, out, count, mlp_datatype_size(dt), 0, 0};
    range_of(dt, w.lo, w.hi);
    return w;
}

inline void write_leaves(Leaves &w, element v, int depth) {
    if (depth > 64) throw Fallback{};
    if (v.type() == element_type::ARRAY) {
        for (element e : array_of(v)) write_leaves(w, e, depth + 1);
        return;
    }
    write_leaf(w, v);
}

// BYTES elements in the tensor layout (each a 4-byte little-endian length, then its bytes), nested
// arrays flattened; the caller counted and sized `out`, and checked that every leaf is a string.
inline void write_strings(uint8_t *&out, element v) {
    if (v.type() == element_type::ARRAY) {
        for (element e : array_of(v)) write_strings(out, e);
        return;
    }
    std::string_view s = str(v);
    uint32_t n = static_cast<uint32_t>(s.size());
    memcpy(out, &n, 4);
    if (n) memcpy(out + 4, s.data(), n);
    out += 4 + n;
}

// Whether an object has duplicate keys (their order is jansson's to define) or a "b64" key (TF
// Serving's base64 strings, left to jansson's decoders); objects with more than 64 members count as
// such too, to bound the search.
inline bool unplain(simdjson::dom::object o) {
    if (o.size() > 64) return true;
    for (auto a = o.begin(); a != o.end(); ++a) {
        if (a.key() == "b64") return true;
        auto b = a;
        for (++b; b != o.end(); ++b)
            if (a.key() == b.key()) return true;
    }
    return false;
}

// What the jansson decoder must judge although simdjson accepts it, found on the parsed tape: an
// unsigned integer (jansson: "too big integer"), a string holding NUL (jansson without
// JSON_ALLOW_NUL), and, when `plain_objects`, an object that is not plain (above). Found here, before
// a decoder calls the host, so that declining later always means an error jansson finds too.
inline bool jansson_would_refuse(element e, int depth, bool plain_objects) {
    if (depth > 2048) return true;
    switch (e.type()) {
    case element_type::UINT64: return true;
    case element_type::STRING: {
        std::string_view s = str(e);
        return memchr(s.data(), 0, s.size()) != nullptr;
    }
    case element_type::ARRAY:
        for (element v : array_of(e))
            if (jansson_would_refuse(v, depth + 1, plain_objects)) return true;
        return false;
    case element_type::OBJECT:
        if (plain_objects && unplain(object_of(e))) return true;
        for (auto field : object_of(e))
            if (memchr(field.key.data(), 0, field.key.size()) ||
                jansson_would_refuse(field.value, depth + 1, plain_objects))
                return true;
        return false;
    default: return false;
    }
}

// One parser per thread: it keeps its buffers between documents.
inline thread_local simdjson::dom::parser t_parser;

// Parses `head` as the root object (or array, when `arrays_too`: json_loadb takes either); false when
// the jansson decoder must judge it (see jansson_would_refuse).
inline bool parse(mlp_bytes head, element &root, bool arrays_too = false, bool plain_objects = false) {
    auto doc = t_parser.parse(reinterpret_cast<const char *>(head.ptr), head.len);
    if (doc.error()) return false;
    element_type type = doc.value_unsafe().type();
    if (type != element_type::OBJECT && !(arrays_too && type == element_type::ARRAY)) return false;
    root = doc.value_unsafe();
    return !jansson_would_refuse(root, 0, plain_objects);
}

} // namespace fast_json

#endif
