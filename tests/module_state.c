// SPDX-License-Identifier: GPL-2.0
/*
 * The loaded hmm_rs module as user space sees it through sysfs.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kselftest_harness.h"

/* Reads the first line of /sys/module/hmm_rs/@attr into @buf. */
static int read_module_attr(const char *attr, char *buf, size_t len)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "/sys/module/hmm_rs/%s", attr);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (!fgets(buf, len, f)) {
		fclose(f);
		return -1;
	}
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

TEST(module_is_live)
{
	char state[32];

	ASSERT_EQ(0, read_module_attr("initstate", state, sizeof(state)));
	EXPECT_STREQ("live", state);
}

TEST(module_is_marked_out_of_tree)
{
	char taint[32];

	ASSERT_EQ(0, read_module_attr("taint", taint, sizeof(taint)));
	EXPECT_NE(NULL, strchr(taint, 'O'));
}

/* hmm_dummy, loaded while these tests run, uses hmm_rs's exported symbols. */
TEST(module_is_held_by_the_dummy_driver)
{
	char refcnt[32];

	ASSERT_EQ(0, access("/sys/module/hmm_rs/holders/hmm_dummy", F_OK));
	ASSERT_EQ(0, read_module_attr("refcnt", refcnt, sizeof(refcnt)));
	EXPECT_STREQ("1", refcnt);
}

TEST_HARNESS_MAIN
