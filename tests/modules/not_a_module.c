/* A shared object that exports no cqrsd_module: refused. */
int not_a_module_answer(void);
__attribute__((visibility("default"))) int not_a_module_answer(void)
{
    return 42;
}
