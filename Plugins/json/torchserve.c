/* The `torchserve` backend: the proxy calls TorchServe's inference API,
 * POST /predictions/{m}[/{version}].
 *
 * TorchServe batches by collecting separate HTTP requests and handing the model's handler a list with
 * one entry per request. The proxy has already formed the batch, so it sends the whole batch as ONE
 * request whose JSON body is a list with one element per item: the item's value when the model has
 * one input, or an object of named values per item when it has several (set TorchServe's own
 * batch_size to 1). The handler therefore sees data[0]["body"] as that list, and must return a
 * one-element list whose element is the list of per-item results, which TorchServe sends back as the
 * reply body: a JSON list of batch_items rows (values, or objects of named outputs). A reply of the
 * KServe v1 shape {"predictions": [...]} is read too. An unnamed output is called "predictions". */
#include "mlp_json.h"

#include <stdlib.h>
#include <string.h>

static mlp_status ts_encode(void *instance, mlp_call *call, const mlp_batch_view *batch) {
    (void)instance;
    mlp_status s = set_model_path(call, "/predictions/", batch->model_name, "/", batch->model_version, "");
    if (s != MLP_OK) return s;
    text_buf b = {0};
    s = write_reply(call, &b, batch->inputs, batch->tensor_stride, batch->input_count, true, NULL, NULL);
    if (s != MLP_OK) {
        free(b.p);
        return s;
    }
    return flush(call, &b, "application/json");
}

mlp_status ts_jansson_decode_reply(mlp_call *call, mlp_bytes body, uint32_t batch_items) {
    json_t *root = json_loadb((const char *)body.ptr, body.len, 0, NULL);
    mlp_status s;
    {
        const json_t *rows = json_is_object(root) ? json_object_get(root, "predictions") : root;
        if (!json_is_array(rows)) {
            s = fail(call, MLP_ERR_UPSTREAM, "TorchServe's reply is not a JSON list of %u results (one per item)%s",
                     batch_items, root ? "" : ": not JSON");
        } else if (json_array_size(rows) != batch_items) {
            s = fail(call, MLP_ERR_UPSTREAM,
                     "TorchServe answered %zu results for a batch of %u items; its handler must return one per item of "
                     "the list it was sent",
                     json_array_size(rows), batch_items);
        } else {
            s = add_rows(call, rows, 0, MLP_ERR_UPSTREAM, "output", "predictions");
        }
    }
    json_decref(root);
    return s;
}

static mlp_status ts_decode(void *instance, mlp_call *call, const mlp_upstream_reply *reply) {
    (void)instance;
    /* TorchServe answers errors as {"code": 4xx/5xx, "type": "...", "message": "..."}. */
    if (reply->http_status != 200) return upstream_error(call, reply, "message", "TorchServe");
    if (ts_fast_decode_reply(call, reply->body, reply->batch_items)) return MLP_OK;
    return ts_jansson_decode_reply(call, reply->body, reply->batch_items);
}

const mlp_backend_vtable mlp_torchserve_backend = {
    .struct_size = sizeof(mlp_backend_vtable),
    .create = stateless_create,
    .destroy = stateless_destroy,
    .encode_request = ts_encode,
    .decode_response = ts_decode,
};
