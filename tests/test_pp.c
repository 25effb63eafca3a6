/*
 * test_pp.c: pipeline parallelism's arithmetic (dist/pp.h) in process: the
 * schedules' order and memory bound, the simulated bubble against
 * (P-1)/(M+P-1), the stage split and its errors. The runs through mpirun
 * are in test_dist.c.
 */
#include <string.h>

#include "../dist/pp.h"
#include "test.h"
#include "tests.h"

/* Every micro-batch's forward once, in order, before its backward; the
 * backwards in order; at most P - s in flight for 1F1B, M for GPipe. */
void pp_schedules(void) {
    PpOp ops[64];
    for (int P = 1; P <= 5; P++)
        for (int M = 1; M <= 12; M++)
            for (int s = 0; s < P; s++)
                for (int kind = PP_GPIPE; kind <= PP_1F1B; kind++) {
                    int n = pp_schedule(kind, P, s, M, ops), nf = 0, nb = 0, ok = n == 2 * M;
                    for (int i = 0; i < n; i++) {
                        if (ops[i].kind == 'F') ok &= ops[i].mb == nf++;
                        else ok &= ops[i].mb == nb++ && nb <= nf;
                    }
                    int want = kind == PP_GPIPE ? M : (P - s < M ? P - s : M);
                    EXPECT(ok && nf == M && nb == M, "%s P %d s %d M %d: bad order", pp_schedule_name(kind), P, s, M);
                    EXPECT(pp_max_inflight(ops, n) == want, "%s P %d s %d M %d: %d in flight, expected %d",
                           pp_schedule_name(kind), P, s, M, pp_max_inflight(ops, n), want);
                }
    /* 1F1B on the last stage alternates from the start; GPipe's backwards wait for every forward */
    pp_schedule(PP_1F1B, 4, 3, 3, ops);
    EXPECT(ops[0].kind == 'F' && ops[1].kind == 'B' && ops[2].kind == 'F', "1f1b last stage: %c%c%c", ops[0].kind,
           ops[1].kind, ops[2].kind);
    pp_schedule(PP_GPIPE, 4, 0, 3, ops);
    EXPECT(ops[2].kind == 'F' && ops[3].kind == 'B', "gpipe: the backwards follow all forwards");
    Err e = {{0}};
    int k;
    EXPECT(pp_schedule_parse("1f1b", &k, &e) == 0 && k == PP_1F1B, "1f1b");
    EXPECT(pp_schedule_parse("gpipe", &k, &e) == 0 && k == PP_GPIPE, "gpipe");
    EXPECT(pp_schedule_parse("interleaved", &k, &e) == -1 &&
           strcmp(e.msg, "--pp-schedule: expected gpipe or 1f1b, got 'interleaved'") == 0, "%s", e.msg);
}

/* Equal stages (backward twice the forward): every stage idles exactly
 * (P-1)/(M+P-1) of the step on both schedules; the step takes
 * (M+P-1)(tf+tb). A slow stage sets the pace: the others idle more. */
void pp_bubble_sim(void) {
    double tf[8], tb[8], idle[8];
    for (int P = 1; P <= 6; P++)
        for (int M = 1; M <= 16; M++)
            for (int kind = PP_GPIPE; kind <= PP_1F1B; kind++) {
                for (int s = 0; s < P; s++) tf[s] = 1, tb[s] = 2;
                double span = pp_simulate(kind, P, M, tf, tb, idle);
                EXPECT(fabs(span - 3.0 * (M + P - 1)) < 1e-9, "%s P %d M %d: step %g, expected %d",
                       pp_schedule_name(kind), P, M, span, 3 * (M + P - 1));
                for (int s = 0; s < P; s++)
                    EXPECT(fabs(idle[s] - pp_bubble(P, M)) < 1e-12, "%s P %d M %d stage %d: idle %g, theory %g",
                           pp_schedule_name(kind), P, M, s, idle[s], pp_bubble(P, M));
            }
    for (int s = 0; s < 4; s++) tf[s] = 1, tb[s] = 2;
    tf[2] = 2, tb[2] = 4; /* stage 2 twice as slow */
    pp_simulate(PP_1F1B, 4, 8, tf, tb, idle);
    EXPECT(idle[2] < idle[0] && idle[2] < idle[3], "the slow stage idles least: %g %g %g", idle[0], idle[2], idle[3]);
}

/* The split by FLOPs minimises the largest stage (checked against every
 * split of 2 and 3 stages); by hand it is what --pp-layers says; errors. */
void pp_split_stages(void) {
    LlamaConfig c;
    Err e = {{0}};
    LC_ASSERT(config_preset("tiny", &c, &e) == 0);
    c.n_layers = 7;
    c.vocab = 900; /* a head worth about a layer and a half */
    int l0[8];
    for (int P = 2; P <= 3; P++) {
        EXPECT(pp_split(&c, 64, P, NULL, l0, &e) == 0, "%s", e.msg);
        double got = 0;
        for (int s = 0; s < P; s++) got = fmax(got, pp_stage_flops(&c, 64, P, l0, s));
        double best = 1e300;
        int t[4] = {0, 0, 0, 0};
        for (int a = 1; a < 7; a++)
            for (int b = a + 1; b <= 7; b++) {
                if ((P == 2) != (b == 7)) continue; /* P 2: cut {0, a, 7}; P 3: {0, a, b, 7} */
                int cut[4] = {0, a, b, 7};
                double mx = 0;
                for (int s = 0; s < P; s++) mx = fmax(mx, pp_stage_flops(&c, 64, P, cut, s));
                if (mx < best) best = mx, memcpy(t, cut, sizeof t);
            }
        EXPECT(fabs(got - best) <= 1e-9 * best, "P %d: largest stage %g FLOPs, best split %g (%d,%d)", P, got, best,
               t[1], t[2]);
        EXPECT(l0[0] == 0 && l0[P] == 7, "P %d: ends %d %d", P, l0[0], l0[P]);
    }
    EXPECT(pp_split(&c, 64, 2, NULL, l0, &e) == 0 && l0[1] == 4, "the head's stage takes fewer layers: %d", l0[1]);
    EXPECT(pp_split(&c, 64, 3, "2,2,3", l0, &e) == 0 && l0[1] == 2 && l0[2] == 4 && l0[3] == 7, "by hand");
    static const struct { int P; const char *layers, *msg; } bad[] = {
        {8, NULL, "--pp: 8 stages for a model of 7 layers (each stage needs a layer)"},
        {2, "3,3", "--pp-layers: '3,3' adds up to 6 layers, the model has 7"},
        {2, "7,0", "--pp-layers: expected a count of layers (at least 1) per stage, e.g. 3,1; got '7,0'"},
        {3, "3,4", "--pp-layers: '3,4' names 2 stages, --pp has 3"},
        {2, "1,1,5", "--pp-layers: '1,1,5' names more than the 2 stages of --pp"},
        {2, "3;4", "--pp-layers: expected a count of layers (at least 1) per stage, e.g. 3,1; got '3;4'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        e.msg[0] = 0;
        EXPECT(pp_split(&c, 64, bad[i].P, bad[i].layers, l0, &e) == -1 && strcmp(e.msg, bad[i].msg) == 0,
               "P %d '%s': %s", bad[i].P, bad[i].layers ? bad[i].layers : "", e.msg);
    }
}
