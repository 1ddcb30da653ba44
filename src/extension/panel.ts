/**
 * The inspection panel on the host side: one webview per checkpoint, its HTML (strict CSP with
 * a nonce, resources only from the extension's dist/ and media/), and the request handlers.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { buildLayout } from '../core/arch';
import { openCheckpoint } from '../core/checkpoint/checkpoint';
import { FactoredKeysError } from '../core/errors';
import type { RankPlan } from '../core/plan';
import { parseWebviewMessage, ProtocolError, type BusyTask, type CheckpointSummary, type EvaluationResult, type HostMessage, type PanelSection, type PlanControls, type SavingsControls, type SpectraPayload, type SweepResult, type WebviewRequest } from '../protocol';
import { evaluatePlan, sweepPlans } from './evaluateFlow';
import { panelDocument } from './html';
import { exportPlan } from './exportFlow';
import { JobError, type JobRunner } from './jobs';
import { PanelTasks } from './panelTasks';
import { checkpointSummary, panelPlan, paperReference, planResult } from './panelModel';
import { calibrationFor } from './calibrationFlow';
import { readSettings } from './settings';

/** What a panel needs from the extension. */
export interface PanelServices {
  readonly extensionUri: vscode.Uri;
  readonly jobs: JobRunner;
  readonly log: vscode.OutputChannel;
  /** Lets the user pick a backend; resolves to the backend now configured. */
  selectBackend(): Promise<string>;
}

/** The panel's HTML for `webview` (see html.ts for the CSP). */
export function panelHtml(webview: vscode.Webview, extensionUri: vscode.Uri, title: string): string {
  return panelDocument(webview.cspSource, (file) => webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, 'dist', file)).toString(), title);
}

/** Webview options: scripts on, and local resources limited to the extension's own folders. */
export function webviewOptions(extensionUri: vscode.Uri): vscode.WebviewOptions {
  return { enableScripts: true, localResourceRoots: [vscode.Uri.joinPath(extensionUri, 'dist'), vscode.Uri.joinPath(extensionUri, 'media')] };
}

/** The webview panel type (for `createWebviewPanel`). */
export const PANEL_VIEW_TYPE = 'factoredKeys.panel';

/** One checkpoint's inspection panel. */
export class CheckpointPanel implements vscode.Disposable {
  private static readonly open = new Map<string, CheckpointPanel>();
  private static lastActive: CheckpointPanel | undefined;

  private summary: CheckpointSummary | null = null;
  private vocabSize: number | undefined;
  private spectra: SpectraPayload | null = null;
  private loadError: string | null = null;
  private ready = false;
  /** Resolves once the webview has said `ready` (host pushes sent earlier could be lost). */
  private readonly webviewReady: Promise<void>;
  private markReady: () => void = () => undefined;
  private loaded: Promise<void>;
  /** Running tasks, each with its own cancellation source (see panelTasks.ts). */
  private readonly tasks = new PanelTasks<BusyTask, vscode.CancellationToken>(
    () => new vscode.CancellationTokenSource(),
    (view) => this.post(view ? { type: 'busy', ...view } : { type: 'busy', task: null }),
  );
  private analyzing: Promise<void> | null = null;
  /** The last plan the webview asked about (validated), used by the Export command. */
  private lastControls: { plan: PlanControls; savings: SavingsControls } | null = null;
  private lastResult: ReturnType<typeof planResult> | null = null;
  private readonly disposables: vscode.Disposable[] = [];

  /** Tells every open panel about a backend setting change. */
  static backendChanged(backend: string): void {
    for (const p of CheckpointPanel.all) p.post({ type: 'backend', backend });
  }

  private static readonly all = new Set<CheckpointPanel>();

  /** The panel the user looked at last, for commands run from the palette. */
  static active(): CheckpointPanel | undefined {
    return CheckpointPanel.lastActive;
  }

  /** Opens (or reveals) the panel for `input` (a folder, index.json or .safetensors path). */
  static show(services: PanelServices, input: string): CheckpointPanel {
    const existing = CheckpointPanel.open.get(input);
    if (existing) {
      existing.panel.reveal();
      return existing;
    }
    const panel = vscode.window.createWebviewPanel(PANEL_VIEW_TYPE, `Factored Keys: ${path.basename(checkpointFolder(input))}`, vscode.ViewColumn.Active, { ...webviewOptions(services.extensionUri), retainContextWhenHidden: true });
    return new CheckpointPanel(services, input, panel, true);
  }

  /** Binds an editor-provided webview (custom editor) to the checkpoint at `input`. */
  static attach(services: PanelServices, input: string, panel: vscode.WebviewPanel): CheckpointPanel {
    panel.webview.options = webviewOptions(services.extensionUri);
    return new CheckpointPanel(services, input, panel, false);
  }

  private constructor(
    private readonly services: PanelServices,
    readonly input: string,
    readonly panel: vscode.WebviewPanel,
    private readonly registered: boolean,
  ) {
    if (registered) CheckpointPanel.open.set(input, this);
    CheckpointPanel.all.add(this);
    CheckpointPanel.lastActive = this;
    panel.iconPath = vscode.Uri.joinPath(services.extensionUri, 'media', 'icon.svg');
    panel.webview.html = panelHtml(panel.webview, services.extensionUri, path.basename(checkpointFolder(input)));
    this.disposables.push(
      panel.webview.onDidReceiveMessage((m) => this.onMessage(m)),
      panel.onDidChangeViewState((e) => {
        if (e.webviewPanel.active) CheckpointPanel.lastActive = this;
      }),
      panel.onDidDispose(() => this.dispose()),
    );
    this.webviewReady = new Promise((resolve) => (this.markReady = resolve));
    this.loaded = this.load();
  }

  dispose(): void {
    this.tasks.cancelAll();
    if (this.registered && CheckpointPanel.open.get(this.input) === this) CheckpointPanel.open.delete(this.input);
    if (CheckpointPanel.lastActive === this) CheckpointPanel.lastActive = undefined;
    CheckpointPanel.all.delete(this);
    this.disposables.forEach((d) => d.dispose());
  }

  get name(): string {
    return this.summary?.name ?? path.basename(checkpointFolder(this.input));
  }

  private post(message: HostMessage): void {
    void this.panel.webview.postMessage(message);
  }

  /** Reads the headers and config (fast, byte-range reads only) to show the summary at once. */
  private async load(): Promise<void> {
    try {
      const ckpt = await openCheckpoint(this.input);
      try {
        this.summary = checkpointSummary(ckpt.dir, buildLayout(ckpt), ckpt.files.length);
        const vocab = ckpt.config.vocab_size;
        this.vocabSize = typeof vocab === 'number' ? vocab : undefined;
      } finally {
        await ckpt.close();
      }
    } catch (e) {
      this.loadError = e instanceof FactoredKeysError ? e.message : `internal error: ${(e as Error).message}`;
      this.services.log.appendLine(`open ${this.input}: ${this.loadError}`);
      void vscode.window.showErrorMessage(`Factored Keys: ${this.loadError}`);
    }
  }

  private async sendInit(): Promise<void> {
    await this.loaded;
    if (!this.summary) {
      this.post({ type: 'notice', level: 'error', message: this.loadError ?? 'the checkpoint could not be opened' });
      return;
    }
    const settings = readSettings();
    this.post({ type: 'init', version: 1, summary: this.summary, defaults: settings.defaults, trusted: vscode.workspace.isTrusted, evaluateAvailable: true, reference: paperReference() });
    // A reloaded webview (moved between editor groups, for instance) gets the user's plan back.
    if (this.lastControls) this.post({ type: 'setPlan', plan: this.lastControls.plan, savings: this.lastControls.savings });
    if (this.spectra) this.post({ type: 'spectra', spectra: this.spectra });
    else void this.analyze().catch(() => undefined);
  }

  private async onMessage(raw: unknown): Promise<void> {
    let message;
    try {
      message = parseWebviewMessage(raw);
    } catch (e) {
      const err = e as ProtocolError;
      this.services.log.appendLine(`rejected webview message: ${err.message}`);
      if (err instanceof ProtocolError && err.id !== undefined) this.post({ type: 'reply', id: err.id, ok: false, error: `invalid request: ${err.message}` });
      return;
    }
    if (message.type === 'ready') {
      this.ready = true;
      await this.sendInit();
      this.markReady();
      return;
    }
    try {
      const result = await this.handle(message);
      this.post({ type: 'reply', id: message.id, ok: true, result });
    } catch (e) {
      const cancelled = e instanceof JobError && e.cancelled;
      const error = e instanceof JobError || e instanceof FactoredKeysError ? e.message : `internal error: ${(e as Error).message}`;
      if (!(e instanceof JobError || e instanceof FactoredKeysError)) this.services.log.appendLine(`${message.type}: ${(e as Error).stack}`);
      this.post({ type: 'reply', id: message.id, ok: false, error, cancelled });
    }
  }

  private async handle(m: WebviewRequest): Promise<unknown> {
    switch (m.type) {
      case 'analyze':
        await this.analyze();
        return null;
      case 'plan': {
        await this.loaded;
        const summary = this.requireSummary();
        // Spectrum-based policies wait for a running analysis instead of failing, and a changed
        // method setting re-runs the analysis for the new method's energies.
        const needsEnergies = m.plan.policy === 'energy' || m.plan.policy === 'budget';
        if (needsEnergies && !this.spectra && this.analyzing) await this.analyzing.catch(() => undefined);
        if (needsEnergies && this.spectra && this.spectra.planMethod !== readSettings().method) await this.analyze().catch(() => undefined);
        const plan = panelPlan(summary, this.spectra, m.plan, readSettings().method);
        this.lastControls = { plan: m.plan, savings: m.savings };
        this.lastResult = planResult(summary, plan, m.savings);
        return this.lastResult;
      }
      case 'export': {
        const dest = await this.export(m.plan);
        return dest ? { path: dest } : null;
      }
      case 'evaluate':
        return this.evaluate(m.plan);
      case 'sweep':
        return this.sweep(m.plan);
      case 'selectBackend':
        return this.services.selectBackend();
      case 'cancel':
        this.tasks.cancelAll();
        return null;
    }
  }

  private requireSummary(): CheckpointSummary {
    if (!this.summary) throw new FactoredKeysError(this.loadError ?? 'the checkpoint is still loading');
    return this.summary;
  }

  /** Runs (or joins) the spectrum analysis and pushes the spectra to the webview. */
  analyze(): Promise<void> {
    if (this.analyzing) return this.analyzing;
    this.analyzing = this.runAnalysis().finally(() => (this.analyzing = null));
    return this.analyzing;
  }

  private async runAnalysis(): Promise<void> {
    await this.loaded;
    const summary = this.requireSummary();
    const settings = readSettings();
    const job = this.tasks.start({ task: 'analyze', backend: settings.backend, label: 'analyzing' });
    try {
      const { spectra, notes } = await this.services.jobs.withProgress(
        { kind: 'analyze', dir: this.input, backend: settings.backend, threads: settings.threads, method: settings.method, calibration: settings.method === 'calibrated' ? await calibrationFor(summary.dir, this.vocabSize, true) : undefined },
        `Analyzing ${summary.name}`,
        `analyzing ${summary.name} · ${settings.backend}`,
        (done, total, label) => job.progress(`${label} (${done}/${total})`),
        job.token,
      );
      notes.forEach((n) => this.services.log.appendLine(`analysis: ${n}`));
      this.spectra = spectra;
      this.services.log.appendLine(`analysis of ${summary.name}: ${spectra.layers * (spectra.kvHeads + spectra.queryHeads)} heads in ${spectra.seconds.toFixed(3)} s on ${spectra.backend}`);
      this.post({ type: 'spectra', spectra });
    } catch (e) {
      const err = e as JobError;
      if (!err.cancelled) {
        this.post({ type: 'notice', level: 'error', message: err.message });
        void vscode.window.showErrorMessage(`Factored Keys: ${err.message}`);
      }
      throw e;
    } finally {
      job.end();
    }
  }

  /** Exports `controls` (the panel's plan) after asking the user for a destination. */
  async export(controls?: PlanControls): Promise<string | null> {
    const use = controls ?? this.lastControls?.plan ?? readSettings().defaults.plan;
    return this.runPlanTask('export', 'exporting', use, (summary, plan, token, progress) => exportPlan(this.services, summary, this.input, plan, token, progress));
  }

  /** Perplexity of the original and of `controls` on held-out text (the user picks it). */
  async evaluate(controls: PlanControls): Promise<EvaluationResult | null> {
    return this.runPlanTask('evaluate', 'evaluating', controls, (summary, plan, token, progress) =>
      evaluatePlan(this.services, summary, this.input, this.vocabSize, plan, token, progress),
    );
  }

  /** Perplexity against key-cache size for both methods around `controls` (the user picks the text). */
  async sweep(controls: PlanControls): Promise<SweepResult | null> {
    return this.runPlanTask('sweep', 'sweeping', controls, (summary, plan, token, progress) =>
      sweepPlans(this.services, summary, this.input, this.vocabSize, controls, plan, token, progress),
    );
  }

  /**
   * One plan-driven job (export, evaluate, sweep): analyses first when the policy needs
   * spectra of the configured method, builds the plan, and keeps the panel's busy state and
   * cancellation token for the job's lifetime.
   */
  private async runPlanTask<T>(
    task: 'export' | 'evaluate' | 'sweep',
    label: string,
    controls: PlanControls,
    run: (summary: CheckpointSummary, plan: RankPlan, token: vscode.CancellationToken, progress: (done: number, total: number, label: string) => void) => Promise<T>,
  ): Promise<T> {
    const summary = this.requireSummary();
    if ((controls.policy === 'energy' || controls.policy === 'budget') && this.spectra?.planMethod !== readSettings().method) await this.analyze();
    const plan = panelPlan(summary, this.spectra, controls, readSettings().method);
    const job = this.tasks.start({ task, label });
    try {
      return await run(summary, plan, job.token, (done, total, step) => job.progress(`${step} (${done}/${total})`));
    } finally {
      job.end();
    }
  }

  /**
   * The Command Palette's Sweep: the plan the panel shows (its defaults before the webview has
   * asked about one), run after any analysis in flight, the result shown in the panel's chart.
   */
  async sweepFromCommand(): Promise<void> {
    await this.loaded;
    const summary = this.requireSummary();
    if (this.analyzing) await this.analyzing.catch(() => undefined);
    if (this.tasks.busy) throw new FactoredKeysError(`${summary.name}: the panel is busy; wait for its task to finish or cancel it, then sweep again`);
    this.reveal('sweep');
    let result: SweepResult | null;
    try {
      result = await this.sweep(this.lastControls?.plan ?? readSettings().defaults.plan);
    } catch (e) {
      const cancelled = e instanceof JobError && e.cancelled;
      const message = cancelled ? 'Sweep cancelled.' : e instanceof JobError || e instanceof FactoredKeysError ? e.message : `internal error: ${(e as Error).message}`;
      this.post({ type: 'notice', level: cancelled ? 'info' : 'error', message });
      throw e;
    }
    if (!result) return;
    await this.webviewReady;
    this.post({ type: 'sweepResult', result });
    this.post({ type: 'focus', section: 'sweep' });
  }

  /** Brings the panel forward and scrolls to a section. */
  reveal(section?: PanelSection): void {
    this.panel.reveal();
    if (section) this.post({ type: 'focus', section });
  }

  /** A one-line savings summary of the last plan the panel showed, if any. */
  savingsSummary(): string | null {
    const r = this.lastResult?.savings;
    if (!r) return null;
    const gb = (b: number) => `${(b / 1e9).toFixed(b >= 1e10 ? 1 : 3)} GB`;
    return `${this.name}: K+V cache at ${r.context.toLocaleString('en-US')} tokens × ${r.batch} (${r.dtype}) ${gb(r.baselineBytes)} → ${gb(r.factoredBytes)}, saves ${gb(r.baselineBytes - r.factoredBytes)}, ×${r.capacityMultiplier.toFixed(2)} capacity`;
  }

  /** Whether the webview has said `ready` (used by tests and the demo's startup). */
  get isReady(): boolean {
    return this.ready;
  }
}

/** The folder a checkpoint input lives in (the input itself when it is a folder). */
export function checkpointFolder(input: string): string {
  return input.endsWith('.safetensors') || input.endsWith('.json') ? path.dirname(input) : input;
}
