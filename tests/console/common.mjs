// What every browser test here shares: settings from the environment, checks that print what
// they showed, and headless Chromium started the way this workplace's machines need (no
// background networking: the closed network refuses it).
import { chromium } from "playwright-core";

export const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};

export function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok: " + what);
}

// For steps whose check is the wait before it (a wait that times out throws).
export const passed = (what) => console.log("ok: " + what);

export const launch = () =>
  chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
