#include "simdjson_baseline.h"

#include <simdjson.h>

#include <charconv>
#include <cmath>

namespace {

double sum(simdjson::dom::element e) {
    switch (e.type()) {
    case simdjson::dom::element_type::ARRAY: {
        double s = 0;
        simdjson::dom::array a;
        if (e.get(a)) return NAN;
        for (simdjson::dom::element v : a) s += sum(v);
        return s;
    }
    case simdjson::dom::element_type::OBJECT: {
        double s = 0;
        simdjson::dom::object o;
        if (e.get(o)) return NAN;
        for (auto field : o) s += sum(field.value);
        return s;
    }
    case simdjson::dom::element_type::DOUBLE: return e.get_double().value_unsafe();
    case simdjson::dom::element_type::INT64: return static_cast<double>(e.get_int64().value_unsafe());
    default: return 0;
    }
}

} // namespace

extern "C" double simdjson_baseline_sum(const char *text, size_t len) {
    static thread_local simdjson::dom::parser parser;
    simdjson::dom::element root;
    if (parser.parse(text, len).get(root)) return NAN;
    return sum(root);
}

extern "C" size_t to_chars_baseline(const float *values, size_t count, char *out) {
    char *p = out;
    for (size_t i = 0; i < count; i++) {
        p = std::to_chars(p, p + 15, values[i]).ptr;
        *p++ = ',';
    }
    return static_cast<size_t>(p - out);
}
