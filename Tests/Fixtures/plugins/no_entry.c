/* A shared library that is not a plugin: it lacks mlp_plugin_init. */
int not_a_plugin(int x);
int not_a_plugin(int x) {
    return x + 1;
}
