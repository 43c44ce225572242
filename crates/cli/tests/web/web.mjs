// Drives `confsum serve`'s web page in real headless Chromium (Debian's
// chromium, through playwright-core), for crates/cli/tests/cli/web.rs.
//
// Environment: CONFSUM_URL (the workload), CONFSUM_ISSUER (the attestation
// service), CONFSUM_HOST_DATA (the right host_data), CONFSUM_WRONG_HOST_DATA,
// CONFSUM_DOCUMENTS (how many documents the image holds), CONFSUM_SECRET (a
// sentence of a document, which the page must never show),
// CONFSUM_SPKI (base64 SHA-256 of the test CA's public key, the one
// certificate Chromium may accept without a trusted root),
// CONFSUM_SCREENSHOTS (a folder), CHROMIUM (default /usr/bin/chromium).
//
// Prints one JSON object on standard output; exits 1 on any failure.
import { chromium } from 'playwright-core';

const env = process.env;
const need = (name) => {
  if (!env[name]) throw new Error(`${name} is not set`);
  return env[name];
};
const url = need('CONFSUM_URL');
const issuer = need('CONFSUM_ISSUER');
const hostData = need('CONFSUM_HOST_DATA');
const wrong = need('CONFSUM_WRONG_HOST_DATA');
const documents = Number(need('CONFSUM_DOCUMENTS'));
const secret = need('CONFSUM_SECRET');
const shots = need('CONFSUM_SCREENSHOTS');
const TIMEOUT = 120_000;

const result = { problems: [] };
const problem = (text) => result.problems.push(text);

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || '/usr/bin/chromium',
  // As root (CI) Chromium's sandbox cannot start.
  args: ['--no-sandbox', `--ignore-certificate-errors-spki-list=${need('CONFSUM_SPKI')}`],
});
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  // A CSP violation or a script error is a failure.
  page.on('console', (m) => { if (m.type() === 'error') problem(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problem(`page error: ${e.message}`));

  const verdict = async () => {
    await page.waitForFunction(() => {
      const v = document.getElementById('verdict');
      return v.classList.contains('verified') || v.classList.contains('refused');
    }, null, { timeout: TIMEOUT });
    return {
      label: (await page.textContent('#verdict')).trim(),
      text: (await page.textContent('#verdict-text')).trim(),
    };
  };
  const pinned = (hd) => `${url}/?host_data=${hd}&issuer=${encodeURIComponent(issuer)}&allow_emulated=1`;

  // 1. The right pins: verified.
  const response = await page.goto(pinned(hostData));
  result.csp = response.headers()['content-security-policy'] || null;
  result.verified = await verdict();
  result.checks = await page.$$eval('#checks tbody tr', (rows) => rows.map((r) => ({
    passed: r.className === 'pass', name: r.children[1].textContent, found: r.children[3].textContent,
  })));
  await page.waitForSelector('#documents:not([hidden])');
  result.documents = await page.$$eval('#documents tbody tr td:nth-child(2)', (c) => c.map((x) => x.textContent));
  if (result.documents.length !== documents) problem(`saw ${result.documents.length} documents, not ${documents}`);

  // 2. Summaries, with the progress bar.
  await page.click('#summarize');
  result.progress_shown = await page.isVisible('#progress');
  await page.waitForFunction((n) => document.querySelectorAll('#summaries .summary.verified, #summaries .summary.refused').length === n
    && !document.getElementById('summarize').disabled, documents, { timeout: TIMEOUT });
  result.summaries = await page.$$eval('#summaries .summary', (cards) => cards.map((c) => ({
    document: c.querySelector('h3').textContent,
    verified: c.classList.contains('verified'),
    text: (c.querySelector('.text') || {}).textContent || null,
    proof: (c.querySelector('.proof') || c.querySelector('.bad') || {}).textContent || null,
  })));
  result.progress = (await page.textContent('#progress-text')).trim();
  if ((await page.content()).includes(secret)) problem('the page shows a document\'s text');
  await page.screenshot({ path: `${shots}/verified.png`, fullPage: true });

  // 3. The user pins another host_data: refused, red, nothing shown as verified.
  await page.fill('#host-data', wrong);
  await page.click('#verify');
  result.refused = await verdict();
  result.refused_color = await page.$eval('#verdict', (v) => getComputedStyle(v).backgroundColor);
  result.refused_summaries = await page.$$eval('#summaries .summary.verified', (c) => c.length);
  result.refused_summarize_enabled = !(await page.isDisabled('#summarize'));
  result.refused_failed = await page.$$eval('#checks tbody tr.fail td:nth-child(2)', (c) => c.map((x) => x.textContent));
  await page.screenshot({ path: `${shots}/refused.png`, fullPage: true });

  // 4. The same from a fresh load with the wrong pin in the address.
  await page.goto(pinned(wrong));
  result.refused_fresh = await verdict();
  result.refused_fresh_documents = await page.$$eval('#documents tbody tr', (r) => r.length);

  // 5. Answers the attested key did not sign, or signed for another
  // request: the first document's answer altered in transit, the second's
  // replaced by a genuine answer to a request for the first.
  const [first, second] = result.documents;
  await page.route('**/v1/summaries', async (route) => {
    const asked = JSON.parse(route.request().postData()).documents[0];
    if (asked === first) {
      const answer = await (await route.fetch()).json();
      const payload = JSON.parse(Buffer.from(answer.payload, 'base64url').toString());
      payload.summaries[0].summary = 'FORGED SUMMARY';
      answer.payload = Buffer.from(JSON.stringify(payload)).toString('base64url');
      await route.fulfill({ status: 200, contentType: 'application/jose+json', body: JSON.stringify(answer) });
    } else {
      const other = await route.fetch({ postData: JSON.stringify({ documents: [first] }) });
      await route.fulfill({ response: other });
    }
  });
  await page.goto(pinned(hostData));
  result.tampered_verdict = await verdict();
  await page.waitForSelector('#documents:not([hidden])');
  await page.click('#summarize');
  await page.waitForFunction((n) => document.querySelectorAll('#summaries .summary.verified, #summaries .summary.refused').length === n
    && !document.getElementById('summarize').disabled, documents, { timeout: TIMEOUT });
  result.tampered = await page.$$eval('#summaries .summary', (cards) => cards.map((c) => ({
    document: c.querySelector('h3').textContent,
    verified: c.classList.contains('verified'),
    text: c.textContent,
  })));
  await page.screenshot({ path: `${shots}/tampered.png`, fullPage: true });
  await page.unroute('**/v1/summaries');

  // 6. A token altered in transit (host_data rewritten to the pinned
  // wrong value): its signature fails, and nothing else is believed.
  await page.route('**/v1/attestation', async (route) => {
    const doc = await (await route.fetch()).json();
    const [h, p, sig] = doc.token.split('.');
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
    claims['x-ms-sevsnpvm-hostdata'] = wrong;
    doc.token = [h, Buffer.from(JSON.stringify(claims)).toString('base64url'), sig].join('.');
    await route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(doc) });
  });
  await page.goto(pinned(wrong));
  result.forged_token = await verdict();
  result.forged_token_failed = await page.$$eval('#checks tbody tr.fail td:nth-child(2)', (c) => c.map((x) => x.textContent));
  result.forged_token_documents = await page.$$eval('#documents tbody tr', (r) => r.length);
  await context.close();
} catch (e) {
  problem(`failed: ${e.stack || e}`);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(result.problems.length ? 1 : 0);
