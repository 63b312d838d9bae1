/**
 * One drawing vocabulary with two back ends: a 2D canvas (what the page shows, fast enough for
 * 100 000 rows because only the visible ones are drawn) and an SVG document (what "Export SVG"
 * saves). The space-time diagram draws through this interface only, so the exported file shows
 * exactly what the canvas shows.
 * @module
 */

/** Stroke and fill options of one shape. */
export interface Style {
  readonly stroke?: string | undefined;
  readonly fill?: string | undefined;
  readonly width?: number | undefined;
  readonly dash?: readonly number[] | undefined;
  readonly opacity?: number | undefined;
  /** SVG class (ignored by the canvas): lets tests and stylesheets find shapes by meaning. */
  readonly cls?: string | undefined;
  /** Title shown by SVG viewers on hover (ignored by the canvas). */
  readonly title?: string | undefined;
}

/** Text options. */
export interface TextStyle {
  readonly fill: string;
  readonly size: number;
  readonly weight?: 'normal' | 'bold';
  readonly align?: 'left' | 'center' | 'right';
  readonly mono?: boolean;
  readonly cls?: string;
}

/** Something to draw on. */
export interface Painter {
  line(x1: number, y1: number, x2: number, y2: number, style: Style): void;
  polyline(points: readonly (readonly [number, number])[], style: Style): void;
  polygon(points: readonly (readonly [number, number])[], style: Style): void;
  rect(x: number, y: number, w: number, h: number, style: Style): void;
  circle(x: number, y: number, r: number, style: Style): void;
  text(x: number, y: number, text: string, style: TextStyle): void;
  /** Starts a group (SVG `<g class>`); the canvas ignores groups. */
  begin(cls: string, attributes?: Readonly<Record<string, string>>): void;
  end(): void;
}

const SANS = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
const MONO = 'ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace';

/** Draws on a canvas 2D context. */
export class CanvasPainter implements Painter {
  constructor(private readonly g: CanvasRenderingContext2D) {}

  private stroke(style: Style): void {
    const g = this.g;
    if (style.stroke === undefined) return;
    g.strokeStyle = style.stroke;
    g.lineWidth = style.width ?? 1;
    g.setLineDash(style.dash === undefined ? [] : [...style.dash]);
    g.globalAlpha = style.opacity ?? 1;
    g.stroke();
    g.globalAlpha = 1;
  }

  private fill(style: Style): void {
    const g = this.g;
    if (style.fill === undefined) return;
    g.fillStyle = style.fill;
    g.globalAlpha = style.opacity ?? 1;
    g.fill();
    g.globalAlpha = 1;
  }

  line(x1: number, y1: number, x2: number, y2: number, style: Style): void {
    this.g.beginPath();
    this.g.moveTo(x1, y1);
    this.g.lineTo(x2, y2);
    this.stroke(style);
  }

  polyline(points: readonly (readonly [number, number])[], style: Style): void {
    this.g.beginPath();
    points.forEach(([x, y], i) => (i === 0 ? this.g.moveTo(x, y) : this.g.lineTo(x, y)));
    this.stroke(style);
  }

  polygon(points: readonly (readonly [number, number])[], style: Style): void {
    this.g.beginPath();
    points.forEach(([x, y], i) => (i === 0 ? this.g.moveTo(x, y) : this.g.lineTo(x, y)));
    this.g.closePath();
    this.fill(style);
    this.stroke(style);
  }

  rect(x: number, y: number, w: number, h: number, style: Style): void {
    this.g.beginPath();
    this.g.rect(x, y, w, h);
    this.fill(style);
    this.stroke(style);
  }

  circle(x: number, y: number, r: number, style: Style): void {
    this.g.beginPath();
    this.g.arc(x, y, r, 0, Math.PI * 2);
    this.fill(style);
    this.stroke(style);
  }

  text(x: number, y: number, text: string, style: TextStyle): void {
    const g = this.g;
    g.font = `${style.weight ?? 'normal'} ${style.size}px ${style.mono === true ? MONO : SANS}`;
    g.fillStyle = style.fill;
    g.textAlign = style.align ?? 'left';
    g.textBaseline = 'middle';
    g.fillText(text, x, y);
  }

  begin(): void {}

  end(): void {}
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function n(value: number): string {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

/** Collects an SVG document. */
export class SvgPainter implements Painter {
  private readonly parts: string[] = [];

  private attrs(style: Style): string {
    let out = '';
    if (style.cls !== undefined) out += ` class="${escapeXml(style.cls)}"`;
    out += ` fill="${style.fill ?? 'none'}"`;
    if (style.stroke !== undefined) out += ` stroke="${style.stroke}" stroke-width="${n(style.width ?? 1)}"`;
    if (style.dash !== undefined && style.dash.length > 0)
      out += ` stroke-dasharray="${style.dash.join(' ')}"`;
    if (style.opacity !== undefined) out += ` opacity="${style.opacity}"`;
    return out;
  }

  private shape(tag: string, geometry: string, style: Style): void {
    if (style.title === undefined) this.parts.push(`<${tag} ${geometry}${this.attrs(style)}/>`);
    else
      this.parts.push(
        `<${tag} ${geometry}${this.attrs(style)}><title>${escapeXml(style.title)}</title></${tag}>`,
      );
  }

  line(x1: number, y1: number, x2: number, y2: number, style: Style): void {
    this.shape('line', `x1="${n(x1)}" y1="${n(y1)}" x2="${n(x2)}" y2="${n(y2)}"`, style);
  }

  polyline(points: readonly (readonly [number, number])[], style: Style): void {
    this.shape('polyline', `points="${points.map(([x, y]) => `${n(x)},${n(y)}`).join(' ')}"`, style);
  }

  polygon(points: readonly (readonly [number, number])[], style: Style): void {
    this.shape('polygon', `points="${points.map(([x, y]) => `${n(x)},${n(y)}`).join(' ')}"`, style);
  }

  rect(x: number, y: number, w: number, h: number, style: Style): void {
    this.shape('rect', `x="${n(x)}" y="${n(y)}" width="${n(w)}" height="${n(h)}"`, style);
  }

  circle(x: number, y: number, r: number, style: Style): void {
    this.shape('circle', `cx="${n(x)}" cy="${n(y)}" r="${n(r)}"`, style);
  }

  text(x: number, y: number, text: string, style: TextStyle): void {
    const anchor = style.align === 'center' ? 'middle' : style.align === 'right' ? 'end' : 'start';
    const cls = style.cls === undefined ? '' : ` class="${escapeXml(style.cls)}"`;
    this.parts.push(
      `<text x="${n(x)}" y="${n(y)}"${cls} fill="${style.fill}" font-size="${style.size}" font-family="${style.mono === true ? 'monospace' : 'sans-serif'}"${style.weight === 'bold' ? ' font-weight="bold"' : ''} text-anchor="${anchor}" dominant-baseline="central">${escapeXml(text)}</text>`,
    );
  }

  begin(cls: string, attributes: Readonly<Record<string, string>> = {}): void {
    const extra = Object.entries(attributes)
      .map(([k, v]) => ` ${k}="${escapeXml(v)}"`)
      .join('');
    this.parts.push(`<g class="${escapeXml(cls)}"${extra}>`);
  }

  end(): void {
    this.parts.push('</g>');
  }

  /** The finished document. */
  document(width: number, height: number, title: string): string {
    return [
      `<?xml version="1.0" encoding="UTF-8"?>`,
      `<svg xmlns="http://www.w3.org/2000/svg" width="${n(width)}" height="${n(height)}" viewBox="0 0 ${n(width)} ${n(height)}">`,
      `<title>${escapeXml(title)}</title>`,
      `<rect width="100%" height="100%" fill="#ffffff"/>`,
      ...this.parts,
      '</svg>',
    ].join('\n');
  }
}
