// The admin console in a real browser (Debian's headless Chromium, driven
// by playwright-core) against a real keygate: run by tests/api/console.rs,
// which starts keygate and passes its addresses and token here.
//
//   KEYGATE_ADMIN_URL=http://127.0.0.1:8081 KEYGATE_PUBLIC_URL=http://127.0.0.1:8080 \
//   KEYGATE_ADMIN_TOKEN=... SCREENSHOTS=target/console-screenshots node tests/console/console.test.mjs
//
// Every step asserts what an admin would see; a failed step exits 1 with
// the reason. Screenshots of each screen go to $SCREENSHOTS.
import { strict as assert } from "node:assert";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";
import { send } from "../../client-examples/node/client.mjs";

const admin = process.env.KEYGATE_ADMIN_URL;
const publicUrl = process.env.KEYGATE_PUBLIC_URL;
const token = process.env.KEYGATE_ADMIN_TOKEN;
const shots = process.env.SCREENSHOTS || "target/console-screenshots";
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
mkdirSync(shots, { recursive: true });

const problems = [];
let step = "start";
const say = (text) => { step = text; console.log(`- ${text}`); };

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"],
});

async function newPage(viewport) {
  const context = await browser.newContext({ viewport, timezoneId: "Europe/Berlin", locale: "en-GB" });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: admin });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  // A CSP violation, a script error or an alert() (the XSS probe) fails the run.
  // (The browser also logs each 401 the API gives a wrong token: expected.)
  page.on("console", (message) => {
    if (message.type() === "error" && !message.text().includes("status of 401")) {
      problems.push(`console error at "${step}": ${message.text()}`);
    }
  });
  page.on("pageerror", (error) => problems.push(`script error at "${step}": ${error.message}`));
  page.on("dialog", (dialog) => { problems.push(`a JavaScript dialog opened at "${step}": ${dialog.message()}`); dialog.dismiss(); });
  return page;
}

async function signIn(page, withToken) {
  await page.fill("#token", withToken);
  await page.click("#sign-in-form button[type=submit]");
}

const shot = (page, name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

try {
  const page = await newPage({ width: 1280, height: 800 });

  say("the sign-in screen, reachable by keyboard");
  await page.goto(`${admin}/`);
  await page.waitForSelector("#sign-in-form");
  assert.equal(await page.evaluate(() => document.activeElement.id), "token");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Sign in");
  await shot(page, "01-sign-in");

  say("with JavaScript off, a submitted token leaves the page by no request");
  {
    const context = await browser.newContext({ javaScriptEnabled: false });
    const bare = await context.newPage();
    bare.setDefaultTimeout(10000);
    const sent = [];
    bare.on("request", (request) => sent.push({ url: request.url(), body: request.postData() || "" }));
    await bare.goto(`${admin}/`);
    await bare.fill("#token", token);
    await Promise.all([bare.waitForNavigation(), bare.click("#sign-in-form button[type=submit]")]);
    assert.ok(sent.length >= 2, `the form was submitted: ${JSON.stringify(sent.map((r) => r.url))}`);
    for (const request of sent) {
      assert.ok(!request.url.includes(token) && !decodeURIComponent(request.url).includes(token),
        `the token is in a URL: ${request.url}`);
      assert.ok(!request.body.includes(token), `the token is in a request body to ${request.url}`);
    }
    assert.ok(!bare.url().includes("token"), `the URL bar shows ${bare.url()}`);
    await context.close();
  }

  say("a wrong token gets a clear message");
  await signIn(page, "not-the-token-0123456789abcdefghijklmnop");
  await page.waitForFunction(() => document.querySelector("#sign-in-error").textContent.includes("not accepted"));
  assert.equal(await page.isVisible("#nav"), false);
  await shot(page, "02-wrong-token");

  say("the right token signs in, kept for the tab only");
  await signIn(page, token);
  await page.waitForSelector("#partners");
  const storage = await page.evaluate(() => ({
    session: sessionStorage.getItem("keygate-admin-token"),
    local: localStorage.length,
    cookie: document.cookie,
    url: location.href,
  }));
  assert.equal(storage.session, token);
  assert.equal(storage.local, 0);
  assert.equal(storage.cookie, "");
  assert.ok(!storage.url.includes(token));

  say("create a partner");
  await page.fill("#new-partner-name", "Acme Logistics");
  await page.click("#create-partner button[type=submit]");
  await page.waitForSelector("#keys");
  assert.equal(await page.textContent("#view h1"), "Acme Logistics");

  say("create a key: the secret is shown once, and works");
  await page.fill("#new-key-name", "ERP sync, prod");
  await page.click("#create-key button[type=submit]");
  await page.waitForSelector("#secret-panel");
  const keyId = (await page.textContent("#new-key-id")).trim();
  const secret = (await page.textContent("#new-secret")).trim();
  assert.match(keyId, /^pk_/);
  assert.match(secret, /^sk_/);
  assert.match(await page.textContent("#secret-panel"), /shown only this once/);
  await page.click(`#secret-panel button[aria-label="Copy secret"]`);
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
  const whoami = await send(keyId, secret, "GET", `${publicUrl}/v1/whoami`);
  assert.equal(whoami.status, 200, JSON.stringify(whoami.answer));
  await shot(page, "03-key-created");

  say("dismissed, the secret is gone from the page");
  await page.click("#dismiss-secret");
  assert.equal(await page.$("#secret-panel"), null);
  assert.ok(!(await page.content()).includes(secret));
  const row = `tr[data-key-id="${keyId}"]`;
  assert.match(await page.textContent(`${row} .key-status`), /active/);
  assert.equal(await page.textContent(`${row} .key-policy`), "none");

  say("a key's access policy, set through the API, is summarised in its row");
  const policy = { rules: [{ methods: ["GET"], path: "/v1/*" }], rate_limit: { per_second: 5, burst: 10 } };
  const put = await fetch(`${admin}/admin/keys/${keyId}/policy`, {
    method: "PUT", body: JSON.stringify(policy),
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
  });
  assert.equal(put.status, 200);
  await page.reload();
  await page.waitForSelector("#keys");
  assert.equal(await page.textContent(`${row} .key-policy`), "1 route · 5/s (burst 10)");
  assert.deepEqual(JSON.parse(await page.getAttribute(`${row} .key-policy span`, "title")), policy);
  assert.match(await page.textContent(row), /ERP sync, prod/);

  say("a second key's secret is gone after a reload");
  await page.click("#create-key button[type=submit]");
  await page.waitForSelector("#secret-panel");
  const secondSecret = (await page.textContent("#new-secret")).trim();
  await page.reload();
  await page.waitForSelector("#keys");
  assert.equal(await page.$("#secret-panel"), null);
  assert.ok(!(await page.content()).includes(secondSecret));

  say("rotate with a one-hour grace: both keys, and the old one's end time");
  await page.click(`${row} button:has-text("Rotate")`);
  await page.waitForSelector("dialog[open] #grace");
  await page.selectOption("#grace", "3600");
  await page.click("#dialog-confirm");
  await page.waitForSelector("#secret-panel");
  const rotatedId = (await page.textContent("#new-key-id")).trim();
  assert.notEqual(rotatedId, keyId);
  assert.match(await page.textContent("#secret-panel"), new RegExp(`old key ${keyId} stops working at .*\\(59 min from now\\)|\\(1 h from now\\)`));
  assert.match(await page.textContent(`${row} .key-status`), /expiring · (59 min|1 h) left/);
  assert.match(await page.textContent(`tr[data-key-id="${rotatedId}"] .key-status`), /active/);
  assert.equal(await page.textContent(`tr[data-key-id="${rotatedId}"] .key-policy`), "1 route · 5/s (burst 10)");
  const expiresTitle = await page.getAttribute(`${row} .key-expires time`, "title");
  assert.match(expiresTitle, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(UTC\)$/);
  await shot(page, "04-rotated");
  await page.click("#dismiss-secret");

  say("revoke, confirming a dialog that names the key and the partner");
  await page.click(`${row} button:has-text("Revoke")`);
  await page.waitForSelector("dialog[open]");
  const question = await page.textContent("dialog[open]");
  assert.ok(question.includes(keyId) && question.includes("Acme Logistics"), question);
  await shot(page, "05-revoke-confirm");
  await page.click("#dialog-confirm");
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent.includes("revoked"), `${row} .key-status`);
  assert.equal(await page.isDisabled(`${row} button:has-text("Revoke")`), true);
  const refused = await send(keyId, secret, "GET", `${publicUrl}/v1/whoami`);
  assert.equal(refused.answer.error.code, "key_revoked");
  await shot(page, "06-revoked");

  say("a partner named like markup is shown as text");
  const xss = `<img src=x onerror=alert(1)>`;
  await page.goto(`${admin}/#/partners`);
  await page.waitForSelector("#create-partner");
  await page.fill("#new-partner-name", xss);
  await page.click("#create-partner button[type=submit]");
  await page.waitForSelector("#keys");
  assert.equal(await page.textContent("#view h1"), xss);
  assert.equal(await page.$("main img"), null);
  await page.click('a[href="#/partners"]');
  await page.waitForSelector("#partners");
  await page.fill("#partner-search", "acme");
  assert.equal(await page.locator("#partners tbody tr").count(), 1);
  await page.fill("#partner-search", "");
  assert.equal(await page.locator("#partners tbody tr").count(), 2);
  assert.match(await page.textContent("#partners"), /2 live \/ 3/);
  await shot(page, "07-partners");

  say("a signed request refused with signature_mismatch shows in the traffic view");
  const mismatch = await send(rotatedId, `${secret}x`, "GET", `${publicUrl}/v1/whoami`);
  assert.equal(mismatch.answer.error.code, "signature_mismatch");
  await page.click('a[href="#/traffic"]');
  await page.waitForSelector('#traffic-legend li[data-result="signature_mismatch"]');
  assert.match(await page.textContent("#traffic-refusals"), /signature_mismatch 1/);
  assert.ok(await page.locator(".chart rect").count() >= 2);
  await shot(page, "08-traffic");

  say("the audit log shows all of it, newest first, filterable");
  await page.click('a[href="#/audit"]');
  await page.waitForSelector("#audit tbody tr");
  const actions = await page.$$eval("#audit tbody tr td:nth-child(2)", (cells) => cells.map((c) => c.textContent));
  assert.deepEqual(actions.slice(0, 7), ["app.create", "key.revoke", "key.rotate", "key.create", "key.policy", "key.create", "app.create"]);
  assert.match(await page.textContent("#audit tbody"), /admin-api@127\.0\.0\.1/);
  await page.selectOption("#audit-partner", { label: "Acme Logistics" });
  assert.equal(await page.locator("#audit tbody tr").count(), 6);
  await page.fill("#audit-key", keyId);
  const forKey = await page.$$eval("#audit tbody tr td:nth-child(2)", (cells) => cells.map((c) => c.textContent));
  assert.deepEqual(forKey, ["key.revoke", "key.rotate", "key.policy", "key.create"]);
  await shot(page, "09-audit");

  say("signing out forgets the token");
  await page.click("#sign-out");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("keygate-admin-token")), null);
  assert.equal(await page.isVisible("#sign-in-form"), true);

  say("a phone's width: readable, nothing wider than the screen but the tables' own scroll");
  const phone = await newPage({ width: 390, height: 844 });
  await phone.goto(`${admin}/`);
  await signIn(phone, token);
  await phone.waitForSelector("#partners");
  await shot(phone, "10-phone-partners");
  await phone.click("#partners tbody a >> nth=0");
  await phone.waitForSelector("#keys");
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page is ${overflow}px wider than the phone`);
  await shot(phone, "11-phone-partner");

  assert.deepEqual(problems, []);
  console.log("console: all steps passed");
} catch (error) {
  console.error(`console test failed at "${step}": ${error.stack || error}`);
  if (problems.length) console.error(problems.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
}
