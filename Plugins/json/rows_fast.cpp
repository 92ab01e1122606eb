// The TF Serving and TorchServe JSON decoders on simdjson: the row format {"instances": [...]} and the
// columnar {"inputs": ...} of a TF Serving request, TF Serving's {"predictions": ...} / {"outputs": ...}
// replies and TorchServe's list of rows. Like v2_fast.cpp, each gives exactly what its jansson twin in
// tfserving.c / torchserve.c gives, host call for host call, or declines (returns false) and leaves the
// body to it: on any error, and, before calling the host, on what it does not decode itself
// ({"b64": ...} values, objects with duplicate keys, whose order jansson defines). Tests/Fuzz's
// rows_diff target compares the two.
#include "fast_json.hpp"

#include <vector>

namespace {

using namespace fast_json;

// The leaves' kinds, as walk() in tfserving.c sorts them.
enum class Kind { none, number, boolean, bytes };

// What walk() in tfserving.c learns of a value whose dims must be rectangular: the first element at
// each depth fixes the dim.
struct ValueInfo {
    int64_t shape[16];
    uint32_t rank = 0;
    size_t count = 0; // leaves
    size_t bytes = 0; // BYTES' framed size (4 + length per element)
    Kind kind = Kind::none;
    bool all_integers = true;
};

// Dim `depth` of length n, whose elements are visited by the caller.
void open_dim(ValueInfo &info, uint32_t depth, int64_t n) {
    if (depth >= 16) throw Fallback{};
    if (depth == info.rank) {
        if (info.count) throw Fallback{}; // ragged
        info.shape[info.rank++] = n;
    } else if (info.shape[depth] != n) {
        throw Fallback{}; // ragged
    }
}

void walk(element v, ValueInfo &info, uint32_t depth) {
    if (v.type() == element_type::ARRAY) {
        simdjson::dom::array a = array_of(v);
        open_dim(info, depth, static_cast<int64_t>(a.size()));
        for (element e : a) walk(e, info, depth + 1);
        return;
    }
    if (depth != info.rank) throw Fallback{}; // ragged
    Kind k;
    switch (v.type()) {
    case element_type::INT64: k = Kind::number; break;
    case element_type::DOUBLE:
        k = Kind::number;
        info.all_integers = false;
        break;
    case element_type::BOOL: k = Kind::boolean; break;
    case element_type::STRING:
        k = Kind::bytes;
        info.bytes += 4 + str(v).size();
        break;
    default: throw Fallback{}; // {"b64": ...} (jansson's), null or another object (an error)
    }
    if (info.kind != Kind::none && info.kind != k) throw Fallback{};
    info.kind = k;
    info.count++;
}

// add_value of tfserving.c for a value given as its dim-0 elements (an array's, or the named values
// gathered from every row).
void add_value(mlp_call *call, std::string_view name, const std::vector<element> &items, uint32_t number_type) {
    ValueInfo info;
    open_dim(info, 0, static_cast<int64_t>(items.size()));
    for (element e : items) walk(e, info, 1);
    uint32_t dt = number_type;
    if (info.kind == Kind::boolean)
        dt = MLP_DT_BOOL;
    else if (info.kind == Kind::bytes)
        dt = MLP_DT_BYTES;
    else if (info.kind == Kind::number && number_type == 0)
        dt = info.all_integers ? MLP_DT_INT64 : MLP_DT_FP64;
    else if (info.kind == Kind::none && number_type == 0)
        dt = MLP_DT_FP32;
    size_t size = dt == MLP_DT_BYTES ? info.bytes : info.count * mlp_datatype_size(dt);
    mlp_tensor_desc desc = {};
    desc.struct_size = sizeof desc;
    desc.datatype = dt;
    desc.name = bytes_of(name);
    desc.shape = info.shape;
    desc.rank = info.rank;
    desc.byte_size = size;
    uint8_t *out = g_host->add_tensor(call, &desc);
    if (!out) throw Fallback{};
    if (dt == MLP_DT_BYTES) {
        for (element e : items) write_strings(out, e);
        return;
    }
    Leaves w = leaves_for(dt, out, info.count);
    for (element e : items) write_leaves(w, e, 1);
    if (w.left != 0) throw Fallback{};
}

std::vector<element> elements_of(element array) {
    std::vector<element> items;
    for (element e : array_of(array)) items.push_back(e);
    return items;
}

// An object's members in order; jansson orders duplicate keys its own way, so those decline.
std::vector<simdjson::dom::key_value_pair> members_of(element obj) {
    std::vector<simdjson::dom::key_value_pair> fields;
    for (auto field : object_of(obj)) {
        for (const auto &seen : fields)
            if (seen.key == field.key) throw Fallback{};
        fields.push_back(field);
    }
    return fields;
}

// is_b64 of tfserving.c, for an object without duplicate keys.
bool is_b64(element v) {
    if (v.type() != element_type::OBJECT) return false;
    simdjson::dom::object o = object_of(v);
    element s;
    return o.size() == 1 && member(v, "b64", s) && s.type() == element_type::STRING;
}

// add_rows of tfserving.c: plain rows make one tensor called `unnamed`; rows of named values one
// tensor per name, gathered from every row.
void add_rows(mlp_call *call, element rows, uint32_t number_type, const char *unnamed) {
    if (rows.type() != element_type::ARRAY) throw Fallback{};
    std::vector<element> items = elements_of(rows);
    if (items.empty()) throw Fallback{};
    element first = items[0];
    if (first.type() != element_type::OBJECT || is_b64(first)) {
        add_value(call, unnamed, items, number_type);
        return;
    }
    auto names = members_of(first);
    std::vector<element> column(items.size());
    for (const auto &name : names) {
        for (size_t i = 0; i < items.size(); i++) {
            if (items[i].type() != element_type::OBJECT || members_of(items[i]).size() != names.size() ||
                !member(items[i], name.key, column[i]))
                throw Fallback{};
        }
        add_value(call, name.key, column, number_type);
    }
}

// add_columns of tfserving.c: a value, or an object of named values.
void add_columns(mlp_call *call, element inputs, uint32_t number_type, const char *unnamed) {
    if (inputs.type() != element_type::OBJECT || is_b64(inputs)) {
        if (inputs.type() != element_type::ARRAY) throw Fallback{};
        add_value(call, unnamed, elements_of(inputs), number_type);
        return;
    }
    for (const auto &field : members_of(inputs)) {
        if (field.value.type() != element_type::ARRAY) throw Fallback{};
        add_value(call, field.key, elements_of(field.value), number_type);
    }
}

} // namespace

extern "C" bool tf_fast_decode_request(mlp_call *call, mlp_bytes body, uint32_t number_type) {
    element root;
    if (!parse(body, root, false, true)) return false;
    try {
        element instances, inputs;
        bool rows = member(root, "instances", instances), columns = member(root, "inputs", inputs);
        if (rows == columns) return false;
        if (rows)
            add_rows(call, instances, number_type, "input");
        else
            add_columns(call, inputs, number_type, "input");
        check(g_host->set_codec_state(call, mlp_bytes{reinterpret_cast<const uint8_t *>(rows ? "r" : "c"), 1}));
        return true;
    } catch (...) { return false; }
}

extern "C" bool tf_fast_decode_reply(mlp_call *call, mlp_bytes body) {
    element root;
    if (!parse(body, root, false, true)) return false;
    try {
        element preds, outputs;
        if (member(root, "predictions", preds)) {
            if (preds.type() != element_type::ARRAY) return false;
            std::vector<element> items = elements_of(preds);
            if (!items.empty() && items[0].type() == element_type::OBJECT && !is_b64(items[0]))
                add_rows(call, preds, 0, "predictions");
            else
                add_value(call, "predictions", items, 0);
        } else if (member(root, "outputs", outputs)) {
            add_columns(call, outputs, 0, "input");
        } else {
            return false;
        }
        return true;
    } catch (...) { return false; }
}

extern "C" bool ts_fast_decode_reply(mlp_call *call, mlp_bytes body, uint32_t batch_items) {
    element root;
    if (!parse(body, root, true, true)) return false;
    try {
        element rows = root;
        if (root.type() == element_type::OBJECT && !member(root, "predictions", rows)) return false;
        if (rows.type() != element_type::ARRAY || array_of(rows).size() != batch_items) return false;
        add_rows(call, rows, 0, "predictions");
        return true;
    } catch (...) { return false; }
}
