#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Judge one boot of the hmm-rs test VM.

Reads the guest's kernel console and its results port (see guest-init.sh),
prints what passed and failed, writes the counts as "passed failed skipped"
to --counts, and exits non-zero on any failure.

What must run is the mode's manifest, scripts/expected/MODE.txt (--manifest
picks another), one expected item a line ('#' starts a comment):
  program NAME   a user-space program (HMMRS-USER-BEGIN/END NAME) with
                 kselftest-harness output: its "# Totals:" are its tests
  bench NAME     a program judged by its exit status alone: 0 passes
  programs GLOB  'program' for each repo file GLOB matches (tests/*.c),
                 named by its basename without extension
  kunit SUITE    a KUnit suite some module runs as it loads
  check NAME     an HMMRS-CHECK-PASSED/FAILED NAME the guest reports
  module NAME    a module loaded and unloaded (HMMRS-LOADED/UNLOADED NAME)
  include FILE   the lines of FILE, next to the manifest
  option reports-not-counted   kernel and user-space crash reports are
                 printed, not counted (the test_hmm.ko reference's boot,
                 where hmm-rs is never loaded)
A guest line "HMMRS-EXPECT [KIND] NAME" (KIND defaults to program) adds an
item. Each expected item that did not run is a failure naming it; a program,
suite, check or module that ran but is in no manifest is one too (add it).

Counted as tests:
- every KUnit case, parsed from the console by the kernel's own
  tools/testing/kunit/kunit.py parse, one top-level KTAP block (a module's
  load) at a time; the blocks printed while booting are cut away;
- every kselftest-harness test of each program (its "# Totals:"); a program
  that ends without totals, or with a non-zero status that its totals do
  not explain, or killed by a signal (status >= 128), counts as one more
  failure. hmm-tests named without its driver is named after the one
  loaded ("hmm-tests@hmm_dummy");
- the reference, "hmm-tests@test_hmm": its passes count as passed; what
  test_hmm.ko itself fails here is listed and counted as skipped (not
  hmm-rs's failure); and parity: every test it passes must pass against
  hmm_dummy ("hmm-tests@hmm_dummy") too, comparing this boot's results
  with another boot's (--parity-with), or within this one if it ran both;
  tests test_hmm.ko passes that hmm_dummy's run left out are listed;
- rust_dmirror (a driver of the dmirror uapi alone, loaded instead of
  hmm_dummy): a program "NAME@rust_dmirror" is compared with hmm_dummy's
  run of it in the same boot, "NAME@hmm_dummy" (hmm-tests, hmm-tests-bench)
  or, for a suite of tests/*.c, "NAME": every test that passed against
  hmm_dummy must pass against rust_dmirror, every test skipped there must
  be skipped (or pass) here, and none may be left out; one test each. The
  others (the storm, the fuzzer) must pass at least one test;
- each module load and unload, each HMMRS-CHECK, the VM finishing by itself
  (HMMRS-DONE), and each expected item (above);
- no user-space crash report (a "segfault at", "traps:" or "general
  protection" line on the console or in the results);
- a console free of kernel bug reports (BUG, WARNING, Oops, KASAN,
  lockdep...), but for the allocation-failure warnings between
  HMMRS-INJECT-BEGIN/END and the IOMMU faults between
  HMMRS-IOMMU-PROBE-BEGIN/END, which are provoked on purpose.

--bench (benchmark boots): the console is judged for bug and crash reports
only (no KUnit); the results for the manifest, module loads, checks,
HMMRS-DONE, the programs' statuses, kselftest totals where printed, and any
"FAIL:" line outside a program. --reports-only: the console's bug and crash
reports alone, no results.

Exit status: 0 if all passed; 3 if the only failure is a bug report the
kernel printed while booting, before user space started (no hmm-rs code
was loaded yet: the emulated machine, not the module), which vm.sh retries
once; 1 otherwise.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTED = os.path.join(REPO, 'scripts', 'expected')

# Kernel reports that mean the kernel (or our module) is broken.
BAD_CONSOLE = re.compile(
    r'(BUG:|WARNING:|Oops|general protection fault|Kernel panic|KASAN|UBSAN|'
    r'possible recursive locking|possible circular locking|'
    r'inconsistent lock state|INFO: task .* blocked|RCU detected stall|'
    r'kernel BUG at|Call Trace:|'
    # The IOMMU caught a device using an address nothing maps (the DMAR
    # driver's fault log), or DMA-API debugging a misuse of the DMA API.
    r'DMAR: \[DMA |DMAR: DRHD: handling fault|is not mapped by the IOMMU|'
    r'DMA-API: (?!preallocated \d+ debug entries|debugging enabled by kernel config))')
# What the kernel prints when a user-space program dies of a fault or trap
# ("hmm_storm[123]: segfault at 0 ip ...", "traps: hmm_fuzz[99] general
# protection fault ip:..."); on the console, a kernel-mode "general
# protection fault" is an Oops (BAD_CONSOLE), in the results it is a crash.
USER_CRASH_CONSOLE = re.compile(r'segfault at |\btraps: ')
USER_CRASH_RESULTS = re.compile(r'segfault at |\btraps: |general protection')
# IOMMU faults provoked on purpose (tests/dma_iommu.c, between its marks).
IOMMU_FAULT = re.compile(r'DMAR: (\[DMA |DRHD: handling fault)')
TIMESTAMP = re.compile(r'^\[\s*\d+\.\d+\]\s?')
# The kernel's own warning that an allocation failed (warn_alloc), with a
# stack dump: expected while failures are injected on purpose.
ALLOC_FAILURE = re.compile(r'(page allocation failure|vmalloc error): ')
TAP_RESULT = re.compile(r'^(ok|not ok) \d+ (\S+)(.*)$')
TOTALS = re.compile(r'^# Totals: pass:(\d+) fail:(\d+) xfail:(\d+) xpass:(\d+) '
                    r'skip:(\d+) error:(\d+)')
REFERENCE, DUMMY = 'hmm-tests@test_hmm', 'hmm-tests@hmm_dummy'
# The driver of the dmirror uapi alone, judged against hmm_dummy's runs.
RUST = 'rust_dmirror'
# Programs named after the device driver they run against, when loaded.
DRIVERS = ('test_hmm', 'hmm_dummy', RUST)
KINDS = ('program', 'bench', 'kunit', 'check', 'module')


class Tally:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def add(self, name, status, why=''):
        if status == 'PASS':
            self.passed += 1
        elif status == 'SKIP':
            self.skipped += 1
        else:
            self.failed += 1
            print(f'FAIL: {name}' + (f': {why}' if why else ''))


class Manifest:
    """The items a boot must run, by kind, in the order they are listed."""

    def __init__(self, path):
        self.path, self.options = path, set()
        self.items = {kind: [] for kind in KINDS}

    def add(self, kind, name):
        if name not in self.items[kind]:
            self.items[kind].append(name)

    def expects(self, kind, name):
        return name in self.items[kind]

    def read(self, path):
        with open(path) as f:
            for number, raw in enumerate(f, 1):
                words = raw.split('#', 1)[0].split()
                if not words:
                    continue
                where = f'{path}:{number}'
                if len(words) != 2:
                    raise ValueError(f'{where}: expected "KIND NAME", got "{raw.strip()}"')
                kind, name = words
                if kind == 'include':
                    self.read(os.path.join(os.path.dirname(path), name))
                elif kind == 'programs':
                    found = sorted(glob.glob(os.path.join(REPO, name)))
                    if not found:
                        raise ValueError(f'{where}: {name} matches no file in {REPO}')
                    for p in found:
                        self.add('program', os.path.splitext(os.path.basename(p))[0])
                elif kind == 'option':
                    self.options.add(name)
                elif kind in KINDS:
                    self.add(kind, name)
                else:
                    raise ValueError(f'{where}: unknown kind "{kind}"')


def load_manifest(spec):
    path = spec if os.sep in spec or spec.endswith('.txt') else os.path.join(EXPECTED, f'{spec}.txt')
    manifest = Manifest(path)
    manifest.read(path)
    return manifest


class Program:
    """One HMMRS-USER-BEGIN ... HMMRS-USER-END block of the results."""

    def __init__(self, name):
        self.name, self.output, self.crashes = name, [], []
        self.rc = self.totals = None
        self.tests = {}  # kselftest test name -> PASS, FAIL or SKIP

    def run_count(self):
        return sum(self.totals)


def parse_results(results):
    """The results port as a list of events, in order: ('program', Program),
    ('check', name, ok), ('load' or 'unload', module, ok), ('note', text),
    ('expect', kind, name), ('crash', line), ('fail-line', line), ('done',)."""
    events, prog, loaded = [], None, []
    for raw in results:
        line = raw.rstrip('\n')
        if prog is not None and not line.startswith('HMMRS-'):
            prog.output.append(line)
            if USER_CRASH_RESULTS.search(line):
                prog.crashes.append(line)
            m = TAP_RESULT.match(line)
            if m:
                prog.tests[m.group(2)] = ('SKIP' if '# SKIP' in m.group(3) else
                                          'PASS' if m.group(1) == 'ok' else 'FAIL')
            m = TOTALS.match(line)
            if m:
                prog.totals = [int(x) for x in m.groups()]
            continue
        words = line.split()
        if not words:
            continue
        tag, arg = words[0], words[1] if len(words) > 1 else ''
        if tag in ('HMMRS-CHECK-PASSED', 'HMMRS-CHECK-FAILED'):
            events.append(('check', arg, tag.endswith('PASSED')))
        elif tag in ('HMMRS-LOADED', 'HMMRS-LOAD-FAILED'):
            events.append(('load', arg, tag == 'HMMRS-LOADED'))
            if tag == 'HMMRS-LOADED':
                loaded.append(arg)
        elif tag in ('HMMRS-UNLOADED', 'HMMRS-UNLOAD-FAILED'):
            events.append(('unload', arg, tag == 'HMMRS-UNLOADED'))
            if tag == 'HMMRS-UNLOADED' and arg in loaded:
                loaded.remove(arg)
        elif tag == 'HMMRS-NOTE':
            events.append(('note', line[len(tag) + 1:]))
        elif tag == 'HMMRS-EXPECT':
            events.append(('expect', words[1] if len(words) > 2 else 'program', words[-1]))
        elif tag == 'HMMRS-USER-BEGIN':
            name = arg
            drivers = [m for m in loaded if m in DRIVERS]
            if name.startswith('hmm-tests') and '@' not in name and drivers:
                name += '@' + drivers[-1]
            prog = Program(name)
            events.append(('program', prog))
        elif tag == 'HMMRS-USER-END':
            if prog is not None:
                try:
                    prog.rc = int(words[2])
                except (IndexError, ValueError):
                    prog.rc = -1
            prog = None
        elif tag == 'HMMRS-DONE':
            events.append(('done',))
        elif USER_CRASH_RESULTS.search(line):
            events.append(('crash', line))
        elif line.startswith('FAIL:'):
            events.append(('fail-line', line))
    return events


def programs_by_name(events):
    return {e[1].name: e[1] for e in events if e[0] == 'program'}


def ktap_blocks(console):
    """Top-level KTAP blocks that modules print as they load, timestamps
    removed. The blocks KUnit prints at boot (empty, or the kernel's own
    built-in suites) come before user space starts and are cut away."""
    blocks, cur, user_space = [], None, False
    for line in console:
        line = TIMESTAMP.sub('', line.rstrip('\n'))
        if line.startswith('Run /init as init process'):
            user_space = True
        if not user_space:
            continue
        if line == 'KTAP version 1':
            cur = [line]
            blocks.append(cur)
        elif cur is not None:
            cur.append(line)
    return blocks


def kunit_status(status):
    # kunit.py's JSON says PASS, SKIP, FAIL or ERROR (a crashed case).
    return 'PASS' if status == 'PASS' else 'SKIP' if status in ('SKIP', 'SKIPPED') else 'FAIL'


def count_cases(node, tally, prefix=''):
    name = prefix + node.get('name', '')
    for number, case in enumerate(node.get('test_cases', []), 1):
        status = case.get('status', 'FAIL')
        # A case the suite never reported (it crashed) has no name.
        case_name = case.get('name') or f'#{number} (never reported)'
        tally.add(f'{name}.{case_name}', kunit_status(status), status)
    for sub in node.get('sub_groups', []):
        count_cases(sub, tally, name + '/')


def judge_kunit(ksrc, console, tally):
    """Counts the KUnit cases; returns the names of the suites that ran."""
    suites = []
    blocks = ktap_blocks(console)
    kunit = os.path.join(ksrc or '', 'tools/testing/kunit/kunit.py')
    if blocks and not os.path.exists(kunit):
        tally.add('kunit.py parse', 'FAIL', f'no {kunit} (--ksrc) to parse {len(blocks)} KTAP block(s)')
        return suites
    for block in blocks:
        with tempfile.TemporaryDirectory() as tmp:
            src, out = os.path.join(tmp, 'ktap'), os.path.join(tmp, 'json')
            with open(src, 'w') as f:
                f.write('\n'.join(block) + '\n')
            proc = subprocess.run([sys.executable, kunit, 'parse', f'--json={out}', src],
                                  capture_output=True, text=True)
            print(proc.stdout, end='')
            if not os.path.exists(out):
                tally.add('kunit.py parse', 'FAIL', proc.stderr.strip())
                continue
            with open(out) as f:
                result = json.load(f)
            before = tally.failed
            for suite in result.get('sub_groups', []):
                suites.append(suite.get('name'))
                count_cases(suite, tally)
            # A suite with no cases (skipped whole, or crashed before its
            # first) is a case of the top level: count it as one.
            for suite in result.get('test_cases', []):
                suites.append(suite.get('name'))
                status = suite.get('status', 'FAIL')
                tally.add(f"{suite.get('name')} (whole suite)", kunit_status(status), status)
            # kunit.py also fails on malformed KTAP or a crashed suite.
            if proc.returncode != 0 and tally.failed == before:
                tally.add('kunit.py parse', 'FAIL', 'KTAP did not parse cleanly')
    return suites


def judge_program(prog, tally, bench_kind, excused, echo):
    """One program's tests, status and crash reports; its output is
    printed if echo (vm.sh prints a benchmark's results itself)."""
    print(f'{prog.name}:')
    for line in prog.output:
        if echo or line.startswith('FAIL:'):
            print(f'  {line}')
        if line.startswith('not ok '):
            print(('reference fails' if prog.name == REFERENCE else 'FAIL') + f': {prog.name}: {line}')
    for line in prog.crashes:
        if excused:
            print(f'user-space crash report (not counted here): {prog.name}: {line}')
        else:
            tally.add(f'{prog.name} crashed', 'FAIL', line)
    rc = prog.rc
    if rc is None:
        tally.add(prog.name, 'FAIL', 'did not finish (no HMMRS-USER-END)')
        return
    signal = f'killed by signal {rc - 128} (status {rc})' if rc >= 128 else ''
    if prog.totals is None:
        if bench_kind:
            tally.add(prog.name, 'FAIL' if rc else 'PASS', signal or f'exit status {rc}')
            if not rc:
                print(f'{prog.name}: exit status 0')
        else:
            tally.add(prog.name, 'FAIL', f'ended with status {rc} and no "# Totals:" line')
        return
    p, f, xf, xp, s, e = prog.totals
    ran = f'{prog.run_count()} run'
    if prog.name == REFERENCE:
        tally.passed += p + xf
        tally.skipped += s + f + xp + e
        print(f'{prog.name}: pass {p + xf}, fail {f + xp + e}, skip {s} ({ran}; its failures '
              'are test_hmm.ko\'s in this VM: counted as skipped, not as hmm-rs failures)')
        return
    tally.passed += p + xf
    tally.skipped += s
    tally.failed += f + xp + e
    print(f'{prog.name}: pass {p + xf}, fail {f + xp + e}, skip {s} ({ran})')
    if signal:
        tally.add(prog.name, 'FAIL', signal)
    elif rc != 0 and f + xp + e == 0:
        tally.add(prog.name, 'FAIL', f'exit status {rc} with no failed test')


def judge_results(events, tally, manifest, ran, echo=True):
    """Module loads, checks and programs, in the order the guest reported
    them; what ran is recorded in ran[kind] for the manifest."""
    excused = 'reports-not-counted' in manifest.options
    done = False
    for event in events:
        kind = event[0]
        if kind == 'program':
            prog = event[1]
            ran['program'].append(prog.name)
            judge_program(prog, tally, manifest.expects('bench', prog.name), excused, echo)
        elif kind == 'check':
            ran['check'].append(event[1])
            tally.add(event[1], 'PASS' if event[2] else 'FAIL')
        elif kind in ('load', 'unload'):
            ran['module'].append(event[1])
            if event[2] or kind == 'unload':
                ran[kind].append(event[1])
            tally.add(f'{kind}ed {event[1]}', 'PASS' if event[2] else 'FAIL')
        elif kind == 'note':
            print(event[1])
        elif kind == 'expect':
            if event[1] not in KINDS:
                tally.add(f'HMMRS-EXPECT {event[1]} {event[2]}', 'FAIL', f'unknown kind {event[1]}')
            else:
                manifest.add(event[1], event[2])
        elif kind == 'crash':
            if excused:
                print(f'user-space crash report (not counted here): {event[1]}')
            else:
                tally.add('user-space crash report', 'FAIL', event[1])
        elif kind == 'fail-line':
            tally.add('results', 'FAIL', event[1])
        elif kind == 'done':
            done = True
    tally.add('VM ran to completion', 'PASS' if done else 'FAIL',
              'no HMMRS-DONE: the guest hung or crashed')


def judge_manifest(manifest, ran, tally, kunit_judged):
    """Every expected item ran; everything that ran was expected."""
    where = os.path.relpath(manifest.path, REPO)
    missing = []
    for kind in KINDS:
        have = ran['program'] if kind == 'bench' else ran[kind]
        if kind == 'kunit' and not kunit_judged:
            continue
        for name in manifest.items[kind]:
            if name not in have:
                missing.append(name)
                tally.add(f'{kind} {name}', 'FAIL', f'expected ({where}) but never ran'
                          if kind != 'module' else f'expected ({where}) but never loaded')
    # A module loaded must go again: the guest unloads what it loads.
    for name in manifest.items['module']:
        if name in ran['load'] and name not in ran['unload']:
            tally.add(f'module {name}', 'FAIL', 'loaded but never unloaded')
    unexpected = []
    for kind, names in (('program', ran['program']), ('kunit', ran['kunit']),
                        ('check', ran['check']), ('module', ran['module'])):
        for name in dict.fromkeys(names):
            if not (manifest.expects(kind, name) or kind == 'program' and manifest.expects('bench', name)):
                unexpected.append(f'{kind} {name}')
    for item in unexpected:
        tally.add(item, 'FAIL', f'ran but is not in {where}: list it there')
    expected = sum(len(v) for k, v in manifest.items.items() if k != 'kunit' or kunit_judged)
    print(f'manifest {where}: {expected - len(missing)} of {expected} expected items ran'
          + (f'; missing: {", ".join(missing)}' if missing else ''))


def judge_parity(ours, ref, tally, source):
    """Every test test_hmm.ko passes passes against hmm_dummy too."""
    name = 'hmm-tests parity (hmm_dummy passes all test_hmm.ko passes)'
    if ref is None or ref.totals is None:
        tally.add(name, 'FAIL', f'no complete {REFERENCE} run in {source}')
        return
    if ours is None:
        tally.add(name, 'FAIL', f'no {DUMMY} run to compare')
        return
    passes = [t for t, s in ref.tests.items() if s == 'PASS']
    left_out = [t for t in passes if t not in ours.tests]
    if ours.totals is None:
        left_out = []  # it stopped short: what it did not reach fails
    missing = [t for t in passes if t not in left_out and ours.tests.get(t) != 'PASS']
    extra = [t for t, s in ref.tests.items() if s != 'PASS' and ours.tests.get(t) == 'PASS']
    compared = len(passes) - len(left_out)
    print(f'parity (reference: {source}): hmm_dummy passes {compared - len(missing)} of the '
          f'{compared} tests test_hmm.ko passes that both ran'
          + (f', and {len(extra)} it does not: {" ".join(extra)}' if extra else '')
          + (f'; not run against hmm_dummy here (left out): {" ".join(left_out)}' if left_out else ''))
    tally.add(name, 'FAIL' if missing else 'PASS', ' '.join(missing))


def rust_counterpart(name, programs):
    """hmm_dummy's run in this boot that program NAME@rust_dmirror is judged
    against: NAME@hmm_dummy for hmm-tests (there must be one), NAME for a
    suite of tests/*.c if it ran; its name, or None (the storm, the fuzzer
    and the benchmarks are judged on their own)."""
    base = name[:-len('@' + RUST)]
    if base.startswith('hmm-tests'):
        return f'{base}@hmm_dummy'
    suites = {os.path.splitext(os.path.basename(p))[0]
              for p in glob.glob(os.path.join(REPO, 'tests', '*.c'))}
    if base in suites and base in programs:
        return base
    return None


def judge_rust_parity(programs, tally):
    """Each NAME@rust_dmirror passes what hmm_dummy's run of it passed and
    skips only what that skipped, in the same boot; one with nothing to
    compare with and kselftest totals must pass something (a run that only
    skipped, as the storm does without a device, proved nothing)."""
    for name, rust in programs.items():
        if not name.endswith('@' + RUST):
            continue
        other = rust_counterpart(name, programs)
        if other is None:
            if rust.totals is not None:
                p, _, xf = rust.totals[:3]
                tally.add(f'{name} passed something', 'PASS' if p + xf else 'FAIL',
                          'every test skipped: it ran against no device')
            continue
        what = f'{name} parity ({other}\'s passes pass, its skips skip)'
        dummy = programs.get(other)
        if dummy is None or dummy.totals is None:
            tally.add(what, 'FAIL', f'no complete {other} run to compare')
            continue
        wrong, left_out, better = [], [], []
        for test, status in dummy.tests.items():
            got = rust.tests.get(test)
            if got is None:
                left_out.append(test)
            elif status == 'PASS' and got != 'PASS':
                wrong.append(f'{test} ({got.lower()}, passed against hmm_dummy)')
            elif status == 'SKIP' and got not in ('SKIP', 'PASS'):
                wrong.append(f'{test} ({got.lower()}, skipped against hmm_dummy)')
            elif status == 'SKIP' and got == 'PASS':
                better.append(test)
        extra = [t for t in rust.tests if t not in dummy.tests]
        print(f'{name}: {len(dummy.tests) - len(left_out) - len(wrong)} of the '
              f'{len(dummy.tests)} tests of {other} as there'
              + (f'; passed where hmm_dummy skipped: {" ".join(better)}' if better else '')
              + (f'; run only here: {" ".join(extra)}' if extra else ''))
        why = wrong + [f'{t} (not run)' for t in left_out]
        tally.add(what, 'FAIL' if why else 'PASS', '; '.join(why[:10]))


def judge_console(console, tally, excused):
    """Kernel bug reports and user-space crash reports on the console.
    Returns whether the only reports came while booting."""
    bad, boot_bad, crashes, user_space = [], [], [], False
    in_inject, alloc_dump, injected_failures = False, False, 0
    in_probe, provoked = False, 0
    for raw in console:
        line = TIMESTAMP.sub('', raw.rstrip())
        user_space = user_space or line.startswith('Run /init as init process')
        # Between these marks (guest-init's fault-injected storm), the
        # stack dump of a failed allocation's warning is what injection
        # does, not a bug: counted and shown, not failed. Anything else,
        # a WARNING: included, still fails.
        if 'HMMRS-INJECT-BEGIN' in line or 'HMMRS-INJECT-END' in line:
            in_inject = 'BEGIN' in line
        if 'HMMRS-IOMMU-PROBE-BEGIN' in line or 'HMMRS-IOMMU-PROBE-END' in line:
            in_probe = 'BEGIN' in line
        if in_probe and IOMMU_FAULT.search(line):
            provoked += 1
            continue
        if in_inject and ALLOC_FAILURE.search(line):
            alloc_dump = True
            injected_failures += 1
            continue
        if alloc_dump:
            if line.startswith('</TASK>'):
                alloc_dump = False
            if line.startswith('Call Trace:'):
                continue
        if USER_CRASH_CONSOLE.search(line):
            crashes.append(line)
        elif BAD_CONSOLE.search(line):
            (bad if user_space else boot_bad).append(line)
    if injected_failures:
        print(f'allocation-failure warnings while failures were injected: {injected_failures} '
              '(expected there; not counted)')
    if provoked:
        print(f'IOMMU fault reports the DMA tests provoked on purpose: {provoked} '
              '(expected there; not counted)')
    if excused:
        for line in (boot_bad + bad + crashes)[:20]:
            print(f'kernel report (the reference\'s, hmm-rs not loaded; not counted): {line}')
        return False
    for line in crashes:
        tally.add('user-space crash report', 'FAIL', line)
    if not crashes:
        tally.add('console free of user-space crash reports', 'PASS')
    tally.add('kernel console free of bug reports', 'FAIL' if bad or boot_bad else 'PASS',
              '; '.join((boot_bad + bad)[:5]))
    return bool(boot_bad and not bad and not crashes)


def read_lines(path):
    try:
        with open(path, errors='backslashreplace') as f:
            return f.readlines()
    except FileNotFoundError:
        return []


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--ksrc', help='the kernel source tree, for its KUnit parser')
    ap.add_argument('--mode', default='test')
    ap.add_argument('--manifest', help='the manifest: a name in scripts/expected/ or a '
                    'path (default: the mode)')
    ap.add_argument('--console')
    ap.add_argument('--results')
    ap.add_argument('--counts')
    ap.add_argument('--parity-with', metavar='RESULTS',
                    help='the results log of the test_hmm.ko reference boot: compare')
    ap.add_argument('--bench', action='store_true',
                    help='a benchmark boot: console reports, then the results (see above)')
    ap.add_argument('--reports-only', action='store_true',
                    help='only look for kernel bug reports on the console')
    ap.add_argument('--show-manifest', action='store_true',
                    help='print the manifest, expanded, and exit')
    args = ap.parse_args()
    spec = args.manifest or args.mode

    if args.show_manifest:
        manifest = load_manifest(spec)
        for kind in KINDS:
            for name in manifest.items[kind]:
                print(f'{kind} {name}')
        for option in sorted(manifest.options):
            print(f'option {option}')
        return
    if not args.console:
        ap.error('--console is needed')
    console = read_lines(args.console)
    if args.reports_only and not args.bench:
        bad = [TIMESTAMP.sub('', line.rstrip()) for line in console
               if BAD_CONSOLE.search(line) or USER_CRASH_CONSOLE.search(line)]
        for line in bad[:10]:
            print(f'kernel report: {line}')
        sys.exit(1 if bad else 0)
    if not args.results:
        ap.error('--results is needed unless --reports-only')

    tally = Tally()
    try:
        manifest = load_manifest(spec)
    except (OSError, ValueError) as e:
        tally.add('manifest', 'FAIL', str(e))
        manifest = Manifest(os.path.join(EXPECTED, f'{spec}.txt'))
    excused = 'reports-not-counted' in manifest.options
    ran = {kind: [] for kind in KINDS + ('load', 'unload')}
    if not args.bench:
        ran['kunit'] = judge_kunit(args.ksrc, console, tally)
    events = parse_results(read_lines(args.results))
    judge_results(events, tally, manifest, ran, echo=not args.bench)

    ours = programs_by_name(events)
    if args.parity_with:
        if not os.path.exists(args.parity_with):
            tally.add('hmm-tests parity', 'FAIL', f'no {args.parity_with}')
        else:
            other, source = programs_by_name(parse_results(read_lines(args.parity_with))), args.parity_with
            if REFERENCE in ours and DUMMY not in ours:
                ours, other, source = other, ours, args.results  # this is the reference's boot
            judge_parity(ours.get(DUMMY), other.get(REFERENCE), tally, source)
    elif REFERENCE in ours and DUMMY in ours:
        judge_parity(ours[DUMMY], ours[REFERENCE], tally, 'this boot')
    judge_rust_parity(programs_by_name(events), tally)

    judge_manifest(manifest, ran, tally, not args.bench)
    failed_before = tally.failed
    boot_only = judge_console(console, tally, excused) and failed_before == 0
    if tally.failed:
        print(f'--- last 40 console lines ({args.console}) ---')
        print(''.join(console[-40:]), end='')
    if args.counts:
        with open(args.counts, 'w') as f:
            f.write(f'{tally.passed} {tally.failed} {tally.skipped}\n')
    print(f'vm ({args.mode}): {tally.passed} passed, {tally.failed} failed, '
          f'{tally.skipped} skipped')
    if boot_only:
        print('the only failure is a kernel report printed while booting, before '
              'user space started and before any hmm-rs code was loaded')
        sys.exit(3)
    sys.exit(1 if tally.failed else 0)


if __name__ == '__main__':
    main()
