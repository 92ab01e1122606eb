// The v2 JSON decoder on simdjson: parses a request's or reply's JSON head and writes numbers straight
// into the host's tensor buffers. It gives exactly what the jansson decoder in v2.c gives, host call
// for host call, or hands the body back to it:
//   - before parsing anything it cannot judge as jansson would (a document with an integer beyond
//     int64, a string holding NUL), and
//   - on any error at all: the jansson decoder then produces the error and its message (its parse
//     fails before it calls the host, and the host keeps the last error and drops a failed request's
//     tensors, so what this decoder did first leaves no trace).
// Tests/Fuzz's v2_diff target runs both decoders on every input and fails if they ever disagree.
#include "fast_json.hpp"

#include <charconv>
#include <cmath>

namespace {

using namespace fast_json;

// Writes a subtree as JSON text that jansson reads back to the same values and types (reals keep a
// '.' or an exponent), for jansson to dump as the jansson decoder does.
void write_json(text_buf *b, element e) {
    switch (e.type()) {
    case element_type::OBJECT: {
        tb_put(b, "{", 1);
        bool first = true;
        for (auto field : object_of(e)) {
            if (!first) tb_put(b, ",", 1);
            first = false;
            tb_json_string(b, reinterpret_cast<const uint8_t *>(field.key.data()), field.key.size());
            tb_put(b, ":", 1);
            write_json(b, field.value);
        }
        tb_put(b, "}", 1);
        break;
    }
    case element_type::ARRAY: {
        tb_put(b, "[", 1);
        bool first = true;
        for (element v : array_of(e)) {
            if (!first) tb_put(b, ",", 1);
            first = false;
            write_json(b, v);
        }
        tb_put(b, "]", 1);
        break;
    }
    case element_type::STRING: {
        std::string_view s = str(e);
        tb_json_string(b, reinterpret_cast<const uint8_t *>(s.data()), s.size());
        break;
    }
    case element_type::INT64: tb_fmt(b, "%lld", static_cast<long long>(e.get_int64().value_unsafe())); break;
    case element_type::DOUBLE: tb_fmt(b, "%.17e", e.get_double().value_unsafe()); break;
    case element_type::BOOL: tb_str(b, e.get_bool().value_unsafe() ? "true" : "false"); break;
    case element_type::NULL_VALUE: tb_str(b, "null"); break;
    default: throw Fallback{};
    }
}

// `parameters`: an object, passed to the host as jansson's compact dump of it.
void pass_parameters(mlp_call *call, element root) {
    element params;
    if (!member(root, "parameters", params)) return;
    if (params.type() != element_type::OBJECT) throw Fallback{};
    text_buf b = {};
    write_json(&b, params);
    json_t *tree = b.oom ? nullptr : json_loadb(b.p, b.len, 0, nullptr);
    free(b.p);
    char *text = tree ? json_dumps(tree, JSON_COMPACT) : nullptr;
    json_decref(tree);
    if (!text) throw Fallback{};
    mlp_status s = g_host->set_parameters_json(call, mlp_bytes{reinterpret_cast<const uint8_t *>(text), strlen(text)});
    free(text);
    check(s);
}

// BYTES: every leaf a string; count them and their framed size first, as count_leaves does.
void count_strings(element v, int depth, size_t &count, size_t &bytes) {
    if (depth > 64) throw Fallback{};
    if (v.type() == element_type::ARRAY) {
        for (element e : array_of(v)) count_strings(e, depth + 1, count, bytes);
        return;
    }
    if (v.type() != element_type::STRING) throw Fallback{};
    count++;
    bytes += 4 + str(v).size();
}

// decode_tensor_array of v2.c: "inputs" of a request, "outputs" of a reply.
void decode_tensors(mlp_call *call, element root, const char *key, v2_binary_cursor *bin) {
    element arr;
    if (!member(root, key, arr) || arr.type() != element_type::ARRAY) throw Fallback{};
    simdjson::dom::array tensors = array_of(arr);
    if (tensors.begin() == tensors.end()) throw Fallback{};
    for (element t : tensors) {
        element name, datatype, shape, data, params, binsize;
        if (t.type() != element_type::OBJECT || !member(t, "name", name) || name.type() != element_type::STRING ||
            !member(t, "datatype", datatype) || datatype.type() != element_type::STRING)
            throw Fallback{};
        std::string_view dt_name = str(datatype);
        // dt_from_name reads a NUL-terminated name; simdjson's strings are NUL-terminated too.
        uint32_t dt = dt_from_name(dt_name.data());
        if (dt == MLP_DT_INVALID || !member(t, "shape", shape) || shape.type() != element_type::ARRAY) throw Fallback{};
        int64_t dims[16];
        uint32_t rank = 0;
        size_t expected = 1;
        for (element d : array_of(shape)) {
            if (rank == 16 || !is_integer(d) || d.get_int64().value_unsafe() < 0) throw Fallback{};
            int64_t n = d.get_int64().value_unsafe();
            if (n > 0 && expected > SIZE_MAX / 16 / static_cast<size_t>(n)) throw Fallback{};
            expected *= static_cast<size_t>(n);
            dims[rank++] = n;
        }
        if (rank == 0) throw Fallback{};
        mlp_tensor_desc desc = {};
        desc.struct_size = sizeof desc;
        desc.datatype = dt;
        desc.name = bytes_of(str(name));
        desc.shape = dims;
        desc.rank = rank;
        if (member(t, "parameters", params) && params.type() == element_type::OBJECT &&
            member(params, "binary_data_size", binsize)) {
            if (!is_integer(binsize) || binsize.get_int64().value_unsafe() < 0 || !bin) throw Fallback{};
            size_t size = static_cast<size_t>(binsize.get_int64().value_unsafe());
            if (size > bin->left || (dt != MLP_DT_BYTES && size != expected * mlp_datatype_size(dt))) throw Fallback{};
            desc.byte_size = size;
            uint8_t *out = g_host->add_tensor(call, &desc);
            if (!out) throw Fallback{};
            if (size) memcpy(out, bin->at, size);
            bin->at += size;
            bin->left -= size;
            continue;
        }
        if (!member(t, "data", data)) throw Fallback{};
        if (dt == MLP_DT_BYTES) {
            size_t count = 0, bytes = 0;
            count_strings(data, 0, count, bytes);
            if (count != expected) throw Fallback{};
            desc.byte_size = bytes;
            uint8_t *out = g_host->add_tensor(call, &desc);
            if (!out) throw Fallback{};
            write_strings(out, data);
            continue;
        }
        desc.byte_size = expected * mlp_datatype_size(dt);
        uint8_t *out = g_host->add_tensor(call, &desc);
        if (!out) throw Fallback{};
        Leaves w = leaves_for(dt, out, expected);
        write_leaves(w, data, 0);
        if (w.left != 0) throw Fallback{}; // less data than the shape says
    }
}

} // namespace

extern "C" bool v2_fast_decode_request(mlp_call *call, mlp_bytes head, v2_binary_cursor *bin) {
    element root;
    if (!parse(head, root)) return false;
    try {
        element id, params, outputs, v, all;
        if (member(root, "id", id)) {
            if (id.type() != element_type::STRING) throw Fallback{};
            check(g_host->set_id(call, bytes_of(str(id))));
        }
        pass_parameters(call, root);
        bool has_params = member(root, "parameters", params);
        if (has_params) {
            if (member(params, "priority", v)) {
                if (!is_integer(v)) throw Fallback{};
                g_host->set_request_int(call, MLP_REQ_PRIORITY, v.get_int64().value_unsafe());
            }
            if (member(params, "timeout", v)) {
                if (!is_integer(v) || v.get_int64().value_unsafe() < 0) throw Fallback{};
                g_host->set_request_int(call, MLP_REQ_TIMEOUT_US, v.get_int64().value_unsafe());
            }
        }
        // Requested outputs, and which of them go back in binary (note_binary_outputs in v2.c).
        text_buf state = {};
        bool all_binary = has_params && member(params, "binary_data_output", all) && all.type() == element_type::BOOL &&
                          all.get_bool().value_unsafe();
        bool any = all_binary;
        tb_put(&state, all_binary ? "*" : "-", 1);
        if (member(root, "outputs", outputs)) {
            if (outputs.type() != element_type::ARRAY) {
                free(state.p);
                throw Fallback{};
            }
            for (element o : array_of(outputs)) {
                element n, oparams, flag;
                if (o.type() != element_type::OBJECT || !member(o, "name", n) || n.type() != element_type::STRING) {
                    free(state.p);
                    throw Fallback{};
                }
                mlp_status s = g_host->add_requested_output(call, bytes_of(str(n)));
                if (s != MLP_OK) {
                    free(state.p);
                    throw Fallback{};
                }
                if (member(o, "parameters", oparams) && oparams.type() == element_type::OBJECT &&
                    member(oparams, "binary_data", flag) && flag.type() == element_type::BOOL) {
                    bool b = flag.get_bool().value_unsafe();
                    tb_put(&state, b ? "+" : "-", 1);
                    tb_put(&state, str(n).data(), str(n).size());
                    tb_put(&state, "\n", 1);
                    any = any || b;
                }
            }
        }
        mlp_status s = MLP_OK;
        if (state.oom)
            s = MLP_ERR_NOMEM;
        else if (any)
            s = g_host->set_codec_state(call, mlp_bytes{reinterpret_cast<const uint8_t *>(state.p), state.len});
        free(state.p);
        check(s);
        decode_tensors(call, root, "inputs", bin);
        if (bin && bin->left) throw Fallback{};
        return true;
    } catch (const Fallback &) { return false; } catch (...) {
        return false;
    }
}

extern "C" bool v2_fast_decode_reply(mlp_call *call, mlp_bytes head, v2_binary_cursor *bin) {
    element root;
    if (!parse(head, root)) return false;
    try {
        pass_parameters(call, root);
        decode_tensors(call, root, "outputs", bin);
        return true;
    } catch (...) { return false; }
}

namespace {

// Numbers as text: the shortest form that reads back as the same value (the float's own for FP32
// and FP16, not the double's), integral values below 1e15 with a ".0", non-finite ones as null.
// `buf` holds at least 40 bytes; returns the end of what was written.
char *format_number(char *buf, double d, bool single) {
    if (!std::isfinite(d)) {
        memcpy(buf, "null", 4);
        return buf + 4;
    }
    const bool integral = d == std::floor(d);
    if (integral && std::fabs(d) < 1e15) {
        char *p = buf;
        if (std::signbit(d)) *p++ = '-';
        char *end = std::to_chars(p, buf + 40, static_cast<long long>(std::fabs(d))).ptr;
        end[0] = '.';
        end[1] = '0';
        return end + 2;
    }
    char *end = single ? std::to_chars(buf, buf + 40, static_cast<float>(d)).ptr : std::to_chars(buf, buf + 40, d).ptr;
    // A value with a fraction always comes out with a point or an exponent; a large integral one may
    // come out without either ("123456789012345680"): keep it a float. Only those are scanned.
    if (integral && !memchr(buf, '.', static_cast<size_t>(end - buf)) &&
        !memchr(buf, 'e', static_cast<size_t>(end - buf))) {
        end[0] = '.';
        end[1] = '0';
        end += 2;
    }
    return end;
}

} // namespace

extern "C" void tb_double(text_buf *b, double d, bool single) {
    char buf[40];
    tb_put(b, buf, static_cast<size_t>(format_number(buf, d, single) - buf));
}

// A float tensor's elements, comma-separated, written straight into the buffer: the encoder's hot
// loop (no per-element call through the buffer's growth check).
extern "C" void tb_float_elements(text_buf *b, const uint8_t *p, size_t count, uint32_t dt) {
    const size_t widest = 41; // a number and its comma
    tb_reserve(b, count * widest);
    if (b->oom) return;
    char *out = b->p + b->len;
    for (size_t i = 0; i < count; i++) {
        if (i) *out++ = ',';
        switch (dt) {
        case MLP_DT_FP32: {
            float f;
            memcpy(&f, p + 4 * i, 4);
            out = format_number(out, f, true);
            break;
        }
        case MLP_DT_FP64: {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out = format_number(out, d, false);
            break;
        }
        default: {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out = format_number(out, float_from_half(h), true);
            break;
        }
        }
    }
    b->len = static_cast<size_t>(out - b->p);
}
