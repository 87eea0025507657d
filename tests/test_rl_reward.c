/* test_rl_reward.c — train/reward.h: answer extraction (\boxed{} with
 * nested braces, ####, regex group, last number), numeric and exact
 * matching, format reward, length penalty, and the reward command (a
 * number read back, bad output / failure / overrun reported naming the
 * task, the overrunning child killed). */
#include "test.h"
#include "train/reward.h"

#include <math.h>
#include <string.h>

int main(void) {
    char out[64];
    lmc_status st;
    lmc_err err = {0};
    CHECK(lmc_reward_extract("so \\boxed{1} no, \\boxed{\\frac{1}{2}} ", LMC_EXTRACT_BOXED, NULL, out, sizeof out, &st, &err));
    CHECK(!strcmp(out, "\\frac{1}{2}"));
    CHECK(!lmc_reward_extract("\\boxed{12", LMC_EXTRACT_BOXED, NULL, out, sizeof out, &st, &err));
    CHECK(lmc_reward_extract("a #### 3\nb #### 1,234 \nc", LMC_EXTRACT_HASH, NULL, out, sizeof out, &st, &err));
    CHECK(!strcmp(out, "1,234"));
    CHECK(lmc_reward_extract("x=3 then y=-42.5.", LMC_EXTRACT_LAST_NUMBER, NULL, out, sizeof out, &st, &err));
    CHECK(!strcmp(out, "-42.5"));
    CHECK(lmc_reward_extract("<a>7</a> <a> 9 </a>", LMC_EXTRACT_REGEX, "<a>([^<]*)</a>", out, sizeof out, &st, &err));
    CHECK(!strcmp(out, "9"));
    CHECK(!lmc_reward_extract("x", LMC_EXTRACT_REGEX, "(", out, sizeof out, &st, &err) && st == LMC_ERR_ARG);
    CHECK(lmc_reward_extract("the answer is 5 #### 6", LMC_EXTRACT_AUTO, NULL, out, sizeof out, &st, &err));
    CHECK(!strcmp(out, "6"));
    CHECK(!lmc_reward_extract("no digits", LMC_EXTRACT_AUTO, NULL, out, sizeof out, &st, &err));

    CHECK(lmc_reward_match("1,234", "1234") == 1.0);
    CHECK(lmc_reward_match("$5.00", "5") == 1.0);
    CHECK(lmc_reward_match("7.", "7") == 1.0);
    CHECK(lmc_reward_match("7.01", "7") == 0.0);
    CHECK(lmc_reward_match(" Genesis 1:1 ", "Genesis 1:1") == 1.0);
    CHECK(lmc_reward_match("Genesis 1:2", "Genesis 1:1") == 0.0);
    double v;
    CHECK(!lmc_reward_parse_number("12abc", &v));
    CHECK(lmc_reward_parse_number("-0.5", &v) && v == -0.5);

    CHECK(lmc_reward_format("<think>x</think><answer>4</answer>", "<answer>", "</answer>") == 1.0);
    CHECK(lmc_reward_format("</answer><answer>", "<answer>", "</answer>") == 0.0);
    CHECK(lmc_reward_length_penalty(10, 20, 100, 0.5) == 0.0);
    CHECK(fabs(lmc_reward_length_penalty(60, 20, 100, 0.5) + 0.25) < 1e-12);
    CHECK(fabs(lmc_reward_length_penalty(100, 20, 100, 0.5) + 0.5) < 1e-12);

    /* reward command: wc -c counts what we sent */
    char *wc[] = {"wc", "-c", NULL};
    double r = 0;
    CHECK(lmc_reward_cmd(wc, "hello", 5, 10.0, "task 3", &r, &err) == LMC_OK && r == 5.0);
    /* a large completion through a pipe larger than its buffer */
    static char big[300000];
    memset(big, 'x', sizeof big);
    CHECK(lmc_reward_cmd(wc, big, sizeof big, 30.0, "task 4", &r, &err) == LMC_OK && r == (double)sizeof big);
    char *echo[] = {"echo", "0.5 extra", NULL};
    CHECK(lmc_reward_cmd(echo, "x", 1, 10.0, "task 7", &r, &err) == LMC_ERR_FORMAT);
    CHECK(strstr(err.msg, "task 7") != NULL);
    char *fail[] = {"false", NULL};
    CHECK(lmc_reward_cmd(fail, "x", 1, 10.0, "task 8", &r, &err) == LMC_ERR_IO && strstr(err.msg, "task 8"));
    char *missing[] = {"/nonexistent/lmc-reward", NULL};
    CHECK(lmc_reward_cmd(missing, "x", 1, 10.0, "task 9", &r, &err) == LMC_ERR_IO);
    /* a child that never answers is killed at the timeout (it would sleep 60 s) */
    char *slow[] = {"sleep", "60", NULL};
    CHECK(lmc_reward_cmd(slow, "", 0, 0.2, "task 11", &r, &err) == LMC_ERR_IO && strstr(err.msg, "timeout"));
    /* a child that exits without reading its stdin */
    char *true_[] = {"echo", "1", NULL};
    CHECK(lmc_reward_cmd(true_, big, sizeof big, 10.0, "task 12", &r, &err) == LMC_OK && r == 1.0);
    return test_finish("test_rl_reward");
}
