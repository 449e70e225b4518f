// A small self-contained SVG of the training (and validation) loss curve.
export function lossCurveSvg(train: Array<{ step: number; loss: number }>, valid: Array<{ step: number; loss: number }> = [], title = 'loss'): string {
  const W = 640, H = 360, L = 56, R = 16, T = 28, B = 40;
  const pts = [...train, ...valid].filter((p) => Number.isFinite(p.loss));
  const xMax = Math.max(1, ...pts.map((p) => p.step));
  let yMin = Math.min(...pts.map((p) => p.loss)), yMax = Math.max(...pts.map((p) => p.loss));
  if (!Number.isFinite(yMin)) { yMin = 0; yMax = 1; }
  if (yMax - yMin < 1e-9) { yMax += 0.5; yMin -= 0.5; }
  const x = (s: number) => L + ((W - L - R) * s) / xMax;
  const y = (v: number) => T + ((H - T - B) * (yMax - v)) / (yMax - yMin);
  const path = (ps: Array<{ step: number; loss: number }>) =>
    ps.filter((p) => Number.isFinite(p.loss)).map((p, i) => `${i ? 'L' : 'M'}${x(p.step).toFixed(1)},${y(p.loss).toFixed(1)}`).join(' ');
  const ticks = 5;
  let grid = '';
  for (let i = 0; i <= ticks; i++) {
    const v = yMin + ((yMax - yMin) * i) / ticks;
    grid += `<line x1="${L}" x2="${W - R}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`;
    grid += `<text x="${L - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" font-size="11">${v.toFixed(3)}</text>`;
  }
  for (let i = 0; i <= ticks; i++) {
    const s = Math.round((xMax * i) / ticks);
    grid += `<text x="${x(s).toFixed(1)}" y="${H - B + 16}" text-anchor="middle" font-size="11">${s}</text>`;
  }
  const esc = (s: string) => s.replace(/[<>&]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;' })[c]!);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${W / 2}" y="18" text-anchor="middle" font-size="14">${esc(title)}</text>
${grid}
<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#333"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#333"/>
<text x="${W / 2}" y="${H - 6}" text-anchor="middle" font-size="12">step</text>
<path d="${path(train)}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>
${valid.length ? `<path d="${path(valid)}" fill="none" stroke="#d62728" stroke-width="1.5" stroke-dasharray="4 3"/>${valid.map((p) => `<circle cx="${x(p.step).toFixed(1)}" cy="${y(p.loss).toFixed(1)}" r="3" fill="#d62728"/>`).join('')}` : ''}
<text x="${W - R - 4}" y="${T + 12}" text-anchor="end" font-size="11" fill="#1f77b4">train</text>
${valid.length ? `<text x="${W - R - 4}" y="${T + 26}" text-anchor="end" font-size="11" fill="#d62728">validation</text>` : ''}
</svg>
`;
}
