#!/usr/bin/env node
// Drives the real Airflow 3.3 UI in headless Chromium (playwright-core) and prints one JSON line.
//
//   node airflow_ui.mjs backfill --base-url URL --dag-id ID --from YYYY-MM-DD --to YYYY-MM-DD --shots DIR
//        [--max-active-runs N] [--reprocess none|failed|completed] [--backwards] [--no-unpause]
//   node airflow_ui.mjs runs --base-url URL --dag-id ID --shots DIR [--name NAME] [--min-runs N]
//   node airflow_ui.mjs page --base-url URL --path PATH --shots DIR --name NAME [--expect-text TEXT ...]
//
// Exit codes: 0 ok, 1 the UI did not do what was asked (a failure screenshot is taken), 2 bad usage.
// Without $AIRFLOW_API_TOKEN the UI is assumed to need no login ([core] simple_auth_manager_all_admins
// = True). With it (a JWT from the api-server's /auth/token), the browser carries it as the UI's
// session cookie `_token` and the REST calls made to cross-check as "Authorization: Bearer ...".
// Backfill "from"/"to" are logical dates (= data_interval_start for a CronDataIntervalTimetable),
// both inclusive, typed at 00:00 in the UTC timezone the browser is pinned to.

import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const USAGE = `usage:
  airflow_ui.mjs backfill --base-url URL --dag-id ID --from YYYY-MM-DD --to YYYY-MM-DD --shots DIR
                 [--max-active-runs N] [--reprocess none|failed|completed] [--backwards] [--no-unpause]
                 [--timeout-s S]
  airflow_ui.mjs runs --base-url URL --dag-id ID --shots DIR [--name NAME] [--min-runs N] [--timeout-s S]
  airflow_ui.mjs page --base-url URL --path PATH --shots DIR --name NAME [--expect-text TEXT ...]
                 [--timeout-s S]`;

const REPROCESS_LABELS = {
  none: 'Missing Runs',
  failed: 'Missing and Errored Runs',
  completed: 'All Runs',
};
const FLAGS = new Set(['backwards', 'no-unpause']);
const REPEATABLE = new Set(['expect-text']);

class UsageError extends Error {}

function parseArgs(argv) {
  const [command, ...rest] = argv;
  const opts = { 'expect-text': [] };
  for (let i = 0; i < rest.length; i += 1) {
    const arg = rest[i];
    if (!arg.startsWith('--')) throw new UsageError(`unexpected argument: ${arg}`);
    const key = arg.slice(2);
    if (FLAGS.has(key)) {
      opts[key] = true;
      continue;
    }
    if (i + 1 >= rest.length) throw new UsageError(`missing value for --${key}`);
    const value = rest[(i += 1)];
    if (REPEATABLE.has(key)) opts[key].push(value);
    else opts[key] = value;
  }
  return { command, opts };
}

function need(opts, ...keys) {
  for (const key of keys) {
    if (opts[key] === undefined || opts[key] === '') throw new UsageError(`--${key} is required`);
  }
}

function isoDay(value, name) {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(value) || Number.isNaN(Date.parse(`${value}T00:00:00Z`))) {
    throw new UsageError(`--${name} must be YYYY-MM-DD, got ${JSON.stringify(value)}`);
  }
  return value;
}

function trimSlash(url) {
  return url.replace(/\/+$/, '');
}

async function rest(baseUrl, method, apiPath, body) {
  const headers = { Accept: 'application/json' };
  if (process.env.AIRFLOW_API_TOKEN) headers.Authorization = `Bearer ${process.env.AIRFLOW_API_TOKEN}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(`${trimSlash(baseUrl)}${apiPath}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`REST ${method} ${apiPath} -> ${response.status}: ${text.slice(0, 500)}`);
  return text ? JSON.parse(text) : null;
}

async function openBrowser(timeoutMs, baseUrl) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
    timeout: timeoutMs,
  });
  // A fresh context: no saved UI timezone, English texts, UTC like the DAG's timetable.
  const context = await browser.newContext({
    viewport: { width: 1400, height: 1300 },
    locale: 'en-US',
    timezoneId: 'UTC',
  });
  if (process.env.AIRFLOW_API_TOKEN && baseUrl) {
    await context.addCookies([{ name: '_token', value: process.env.AIRFLOW_API_TOKEN, url: trimSlash(baseUrl) }]);
  }
  context.setDefaultTimeout(Math.min(timeoutMs, 30_000));
  context.setDefaultNavigationTimeout(timeoutMs);
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(String(error.message || error).slice(0, 300)));
  return { browser, page, pageErrors };
}

async function shoot(page, dir, name, shots) {
  const file = path.join(dir, `${name}.png`);
  await page.screenshot({ path: file });
  shots.push(file);
  return file;
}

async function visibleText(locator) {
  if ((await locator.count()) === 0) return null;
  return (await locator.first().innerText()).replace(/\s+/g, ' ').trim();
}

// ---------------------------------------------------------------------------------------------
// backfill

async function fillDateTime(page, dialog, label, day) {
  const trigger = dialog.getByRole('group').filter({ has: page.getByText(label, { exact: true }) })
    .getByTestId('datetime-input');
  await trigger.click();
  // The picker is a popover dialog whose date textbox is labelled like the field ("From"/"To").
  const dateBox = page.getByRole('textbox', { name: label, exact: true });
  const popover = page.getByRole('dialog').filter({ has: dateBox });
  await dateBox.fill(day.replaceAll('-', '/'));
  await popover.getByPlaceholder('HH:mm').fill('00:00');
  await page.keyboard.press('Escape');
  await popover.waitFor({ state: 'hidden' });
  const shown = (await trigger.innerText()).trim();
  return shown;
}

async function uiErrorText(dialog) {
  const text = await dialog.innerText().catch(() => '');
  const match = text.match(/Run this Dag for a range of dates\s*([\s\S]*?)\s*Backfill Dag runs are ordered/);
  return match ? match[1].replace(/\s+/g, ' ').trim() || null : null;
}

async function backfill(opts, ctx) {
  need(opts, 'base-url', 'dag-id', 'from', 'to', 'shots');
  const from = isoDay(opts.from, 'from');
  const to = isoDay(opts.to, 'to');
  const reprocess = opts.reprocess ?? 'none';
  if (!(reprocess in REPROCESS_LABELS)) throw new UsageError(`--reprocess must be none, failed or completed`);
  const maxActive = opts['max-active-runs'];
  if (maxActive !== undefined && !/^[1-9]\d*$/.test(maxActive)) throw new UsageError('--max-active-runs must be a positive integer');
  const base = trimSlash(opts['base-url']);
  const dagId = opts['dag-id'];
  const { page, shots } = ctx;
  const out = { dag_id: dagId, from, to, reprocess };

  const createAttempts = [];
  const dryRuns = [];
  page.on('response', async (response) => {
    const url = new URL(response.url());
    if (response.request().method() !== 'POST') return;
    if (url.pathname === '/api/v2/backfills' || url.pathname === '/api/v2/backfills/dry_run') {
      let body = null;
      try {
        body = await response.json();
      } catch {
        body = null;
      }
      const entry = { status: response.status(), request: response.request().postDataJSON(), response: body };
      (url.pathname.endsWith('dry_run') ? dryRuns : createAttempts).push(entry);
    }
  });

  await page.goto(`${base}/dags/${encodeURIComponent(dagId)}`);
  const triggerButton = page.getByRole('button', { name: 'Trigger Dag' });
  await triggerButton.waitFor();
  out.login_required = /\/login/.test(page.url());
  await triggerButton.click();

  const dialog = page.getByRole('dialog').filter({ has: page.getByRole('heading', { level: 2 }) }).first();
  await dialog.getByText('Run this Dag for a range of dates', { exact: true }).click();
  const title = dialog.getByRole('heading', { name: `Run Backfill - ${dagId}` });
  await title.waitFor();
  out.dialog_title = await title.innerText();

  out.from_shown = await fillDateTime(page, dialog, 'From', from);
  out.to_shown = await fillDateTime(page, dialog, 'To', to);

  await dialog.getByText(REPROCESS_LABELS[reprocess], { exact: true }).click();

  const maxField = dialog.locator('input[name="max_active_runs"]');
  if ((await maxField.count()) > 0) {
    if (maxActive !== undefined) await maxField.fill(maxActive);
    out.max_active_runs_field = {
      value: await maxField.inputValue(),
      min: await maxField.getAttribute('min'),
      max: await maxField.getAttribute('max'),
    };
  } else if (maxActive !== undefined) {
    throw new Error('the backfill form has no Max Active Runs field');
  }

  const backwards = dialog.getByRole('checkbox', { name: 'Run Backwards' });
  if ((await backwards.count()) > 0) {
    await backwards.setChecked(Boolean(opts.backwards), { force: true });
    out.run_backwards = await backwards.isChecked();
  } else if (opts.backwards) {
    throw new Error('the backfill form has no Run Backwards checkbox');
  }
  const unpause = dialog.getByRole('checkbox', { name: /^Unpause .* on trigger$/ });
  if ((await unpause.count()) > 0) {
    await unpause.setChecked(!opts['no-unpause'], { force: true });
    out.unpause_on_trigger = await unpause.isChecked();
  }

  // The form runs a dry run on every change and then says how many runs it would create.
  const affected = dialog.getByText(/^(\d+ runs? will be triggered\.|No runs matching selected criteria\.)$/);
  await affected.waitFor();
  await page.waitForLoadState('networkidle').catch(() => {});
  out.ui_affected_text = await visibleText(affected);
  const lastDry = dryRuns.at(-1);
  if (lastDry) {
    out.dry_run_request = lastDry.request;
    out.dry_run_logical_dates = (lastDry.response?.backfills ?? []).map((b) => b.logical_date);
  }
  out.form_screenshot = await shoot(page, ctx.dir, 'backfill-form', shots);

  const submit = dialog.getByRole('button', { name: 'Run Backfill' });
  if (!(await submit.isEnabled())) {
    const alert = await visibleText(dialog.getByRole('alert'));
    throw new Error(`"Run Backfill" is disabled (${out.ui_affected_text}${alert ? `; ${alert}` : ''})`);
  }
  await submit.click();

  // Success is the toast; the UI itself retries a 5xx (SQLite "database is locked" answers 503) up to 3 times.
  const toast = page.getByText('Backfill jobs have been successfully triggered.', { exact: true });
  const deadline = Date.now() + ctx.timeoutMs;
  for (;;) {
    if (await toast.first().isVisible().catch(() => false)) break;
    const final = createAttempts.find((a) => a.status >= 400 && a.status < 500 && a.status !== 429);
    if (final || createAttempts.filter((a) => a.status >= 500).length >= 4) {
      // The form shows the API error ("409 Conflict" + detail) at its top: bring it into the failure shot.
      await title.scrollIntoViewIfNeeded().catch(() => {});
      const shown = await uiErrorText(dialog);
      throw new Error(`backfill creation failed: ${JSON.stringify(createAttempts.map((a) => [a.status, a.response]))}${shown ? `; UI says: ${shown}` : ''}`);
    }
    if (Date.now() > deadline) throw new Error('no "Backfill generated" toast before the timeout');
    await page.waitForTimeout(250);
  }
  out.ui_toast = 'Backfill generated: Backfill jobs have been successfully triggered.';
  out.create_attempts = createAttempts.map((a) => ({ status: a.status, detail: a.response?.detail ?? null }));
  out.create_request = createAttempts.at(-1)?.request ?? null;

  const banner = page.getByText('Backfill in progress', { exact: false }).first();
  await banner.waitFor({ timeout: 15_000 }).catch(() => {});
  out.ui_banner = await visibleText(banner.locator('xpath=ancestor::*[.//time][1]')).catch(() => null);
  out.created_screenshot = await shoot(page, ctx.dir, 'backfill-created', shots);

  const created = createAttempts.find((a) => a.status < 300)?.response ?? null;
  out.backfill_id = created?.id ?? null;
  // Cross-check through REST: the backfill and the runs it made.
  const listed = await rest(base, 'GET', `/api/v2/backfills?dag_id=${encodeURIComponent(dagId)}&limit=100`);
  const mine = listed.backfills.find((b) => b.id === out.backfill_id) ?? listed.backfills.at(-1);
  if (!mine) throw new Error('the UI said the backfill was created but GET /api/v2/backfills lists none');
  out.backfill_id = mine.id;
  out.backfill = mine;
  const runs = await rest(
    base,
    'GET',
    `/api/v2/dags/${encodeURIComponent(dagId)}/dagRuns?run_type=backfill&order_by=logical_date&limit=1000`
      + `&logical_date_gte=${encodeURIComponent(mine.from_date)}&logical_date_lte=${encodeURIComponent(mine.to_date)}`,
  );
  out.runs = runs.dag_runs.map((r) => ({
    run_id: r.dag_run_id,
    state: r.state,
    logical_date: r.logical_date,
    data_interval_start: r.data_interval_start,
    data_interval_end: r.data_interval_end,
    run_after: r.run_after,
  }));
  return out;
}

// ---------------------------------------------------------------------------------------------
// runs

async function readRunsTable(table) {
  const headers = (await table.getByRole('columnheader').allInnerTexts()).map((h) => h.replace(/\s+/g, ' ').trim());
  const rows = table.getByRole('rowgroup').nth(1).getByRole('row');
  const result = [];
  for (let i = 0; i < (await rows.count()); i += 1) {
    const cells = (await rows.nth(i).getByRole('cell').allInnerTexts()).map((c) => c.replace(/\s+/g, ' ').trim());
    const byHeader = {};
    headers.forEach((header, k) => {
      if (header && k < cells.length) byHeader[header] = cells[k];
    });
    result.push({
      run_id: byHeader['Dag Run ID'] ?? null,
      state: (byHeader.State ?? '').toLowerCase() || null,
      run_after: byHeader['Run After'] ?? null,
      run_type: byHeader['Run Type'] ?? null,
      triggering_user: byHeader['Triggering User'] || null,
      start_date: byHeader['Start Date'] || null,
    });
  }
  return { headers, runs: result };
}

async function runs(opts, ctx) {
  need(opts, 'base-url', 'dag-id', 'shots');
  const minRuns = Number(opts['min-runs'] ?? 0);
  if (!Number.isInteger(minRuns) || minRuns < 0) throw new UsageError('--min-runs must be an integer >= 0');
  const base = trimSlash(opts['base-url']);
  const dagId = opts['dag-id'];
  const { page, shots } = ctx;
  const url = `${base}/dags/${encodeURIComponent(dagId)}/runs`;
  await page.goto(url);
  const heading = page.getByRole('heading', { name: /^\d+ Dag Runs?$/ });
  const empty = page.getByText(/No Dag Runs found/i);
  await heading.or(empty).first().waitFor();

  // The page refreshes itself every few seconds; wait until it lists at least --min-runs runs.
  const deadline = Date.now() + ctx.timeoutMs;
  let seen;
  for (;;) {
    const table = page.getByRole('table').first();
    if ((await table.count()) > 0) {
      await table.getByRole('rowgroup').nth(1).getByRole('row').first().waitFor({ timeout: 5_000 }).catch(() => {});
      seen = await readRunsTable(table);
    } else {
      seen = { headers: [], runs: [] };
    }
    if (seen.runs.length >= minRuns) break;
    if (Date.now() > deadline) throw new Error(`the runs page shows ${seen.runs.length} runs, expected at least ${minRuns}`);
    await page.waitForTimeout(1_000);
  }
  await page.waitForLoadState('networkidle').catch(() => {});
  return {
    dag_id: dagId,
    url,
    heading: await visibleText(heading),
    columns: seen.headers.filter(Boolean),
    runs: seen.runs,
    screenshot: await shoot(page, ctx.dir, opts.name ?? 'runs', shots),
  };
}

// ---------------------------------------------------------------------------------------------
// page

async function findText(page, text, timeoutMs) {
  // Looks in every frame: a plugin view may be a FastAPI page or an iframe inside the React UI.
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const frame of page.frames()) {
      const hit = frame.getByText(text, { exact: false }).first();
      if ((await hit.count().catch(() => 0)) > 0 && (await hit.isVisible().catch(() => false))) {
        return frame === page.mainFrame() ? 'main' : frame.url();
      }
    }
    if (Date.now() > deadline) return null;
    await page.waitForTimeout(250);
  }
}

async function pageCommand(opts, ctx) {
  need(opts, 'base-url', 'path', 'shots', 'name');
  const base = trimSlash(opts['base-url']);
  const rel = opts.path.startsWith('/') ? opts.path : `/${opts.path}`;
  const { page, shots } = ctx;
  const response = await page.goto(`${base}${rel}`);
  await page.waitForLoadState('networkidle', { timeout: 15_000 }).catch(() => {});
  const expected = opts['expect-text'];
  const found = {};
  const missing = [];
  const deadline = Date.now() + Math.min(ctx.timeoutMs, 30_000);
  for (const text of expected) {
    const where = await findText(page, text, Math.max(0, deadline - Date.now()));
    if (where) found[text] = where;
    else missing.push(text);
  }
  const out = {
    url: page.url(),
    http_status: response ? response.status() : null,
    title: await page.title(),
    headings: (await page.getByRole('heading').allInnerTexts()).map((h) => h.trim()).filter(Boolean).slice(0, 20),
    frames: page.frames().map((f) => f.url()).filter((u) => u && u !== 'about:blank'),
    found,
    missing,
    // An unknown path still answers 200: the React app then renders its own 404 page.
    ui_not_found: await page.getByText('Page Not Found.', { exact: false }).first().isVisible().catch(() => false),
    screenshot: await shoot(page, ctx.dir, opts.name, shots),
  };
  if (missing.length > 0) {
    const error = new Error(`expected text missing on ${rel}: ${missing.map((t) => JSON.stringify(t)).join(', ')}`);
    error.details = out;
    throw error;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

const COMMANDS = { backfill, runs, page: pageCommand };

async function main() {
  const started = Date.now();
  let parsed;
  try {
    parsed = parseArgs(process.argv.slice(2));
    if (!(parsed.command in COMMANDS)) throw new UsageError(`unknown command: ${parsed.command ?? '(none)'}`);
    need(parsed.opts, 'shots');
  } catch (error) {
    process.stderr.write(`${error.message}\n${USAGE}\n`);
    process.stdout.write(`${JSON.stringify({ ok: false, command: parsed?.command ?? null, error: error.message })}\n`);
    return 2;
  }
  const { command, opts } = parsed;
  const timeoutS = Number(opts['timeout-s'] ?? 120);
  const dir = path.resolve(opts.shots);
  fs.mkdirSync(dir, { recursive: true });
  const ctx = { dir, shots: [], timeoutMs: timeoutS * 1000 };
  let browser;
  try {
    const opened = await openBrowser(ctx.timeoutMs, opts['base-url']);
    browser = opened.browser;
    ctx.page = opened.page;
    const result = await COMMANDS[command](opts, ctx);
    const line = {
      ok: true,
      command,
      ...result,
      screenshots: ctx.shots,
      page_errors: opened.pageErrors,
      elapsed_s: Number(((Date.now() - started) / 1000).toFixed(1)),
    };
    process.stdout.write(`${JSON.stringify(line)}\n`);
    return 0;
  } catch (error) {
    let failureShot = null;
    if (ctx.page) {
      failureShot = path.join(dir, `${opts.name ?? command}-failure.png`);
      await ctx.page.screenshot({ path: failureShot, fullPage: true }).catch(() => { failureShot = null; });
    }
    const usage = error instanceof UsageError;
    const message = String(error.message || error).split('\n')[0];
    process.stderr.write(`airflow_ui ${command}: ${usage ? `${message}\n${USAGE}` : String(error.stack || error)}\n`);
    const line = {
      ok: false,
      command,
      error: message,
      url: ctx.page ? ctx.page.url() : null,
      failure_screenshot: failureShot,
      ...(error.details ? { details: error.details } : {}),
      screenshots: ctx.shots,
      elapsed_s: Number(((Date.now() - started) / 1000).toFixed(1)),
    };
    process.stdout.write(`${JSON.stringify(line)}\n`);
    return usage ? 2 : 1;
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
}

process.exitCode = await main();
