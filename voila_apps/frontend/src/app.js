// The dashboard page's front end: connects to the page's (preheated) kernel and draws its widgets.
import * as base from "@jupyter-widgets/base";
import { ManagerBase } from "@jupyter-widgets/base-manager";
import * as controls from "@jupyter-widgets/controls";
import { KernelAPI, KernelConnection, ServerConnection } from "@jupyterlab/services";
import { MessageLoop } from "@lumino/messaging";
import { Widget } from "@lumino/widgets";
import "@lumino/widgets/style/index.css";
import "font-awesome/css/font-awesome.css";
import "@jupyter-widgets/base/css/index.css";
import "@jupyter-widgets/controls/css/widgets.css";

const VIEW_MIME = "application/vnd.jupyter.widget-view+json";
const config = JSON.parse(document.getElementById("jupyter-config-data").textContent);

class PageManager extends ManagerBase {
  constructor(kernel) {
    super();
    this.kernel = kernel;
    kernel.registerCommTarget(this.comm_target_name, async (comm, msg) => {
      await this.handle_comm_open(new base.shims.services.Comm(comm), msg);
    });
  }
  async loadClass(className, moduleName) {
    const module = await loadModule(moduleName);
    if (!module[className]) throw new Error(`${className} not found in ${moduleName}`);
    return module[className];
  }
  async _create_comm(target, modelId, data, metadata, buffers) {
    const comm = this.kernel.createComm(target, modelId);
    if (data || metadata) comm.open(data, metadata, buffers);
    return new base.shims.services.Comm(comm);
  }
  async _get_comm_info() {
    const reply = await this.kernel.requestCommInfo({ target_name: this.comm_target_name });
    return reply.content.status === "ok" ? reply.content.comms : {};
  }
}

// Third-party widget libraries (bqplot, bqscales) come from their classic-notebook bundles: AMD
// modules that need only @jupyter-widgets/base, loaded the first time one of their widgets is drawn.
// One `define` serves them all; the script that calls it says which module it is.
const amd = {};
const settle = {};
window.define = (...args) => {
  const name = document.currentScript && document.currentScript.dataset.widgetModule;
  if (typeof args[0] === "string") args.shift(); // define("id", deps, factory)
  const [deps, factory] = typeof args[0] === "function" ? [[], args[0]] : args;
  const shared = { "@jupyter-widgets/base": base, "@jupyter-widgets/controls": controls };
  settle[name]?.resolve(factory(...deps.map((dep) => shared[dep])));
};
window.define.amd = true;

function loadModule(name) {
  if (name === "@jupyter-widgets/base") return Promise.resolve(base);
  if (name === "@jupyter-widgets/controls") return Promise.resolve(controls);
  if (!amd[name]) {
    amd[name] = new Promise((resolve, reject) => {
      settle[name] = { resolve };
      const script = document.createElement("script");
      script.dataset.widgetModule = name;
      script.src = `${config.baseUrl}deepe/nbextensions/${encodeURIComponent(name)}/index.js`;
      script.onerror = () => reject(new Error(`the widget library ${name} is not installed (no nbextension)`));
      document.head.appendChild(script);
    });
  }
  return amd[name];
}

const escapeHtml = (text) => String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;");

async function drawOutput(output, host, manager, roots) {
  const data = output.data || {};
  if (data[VIEW_MIME]) {
    const view = await manager.create_view(await manager.get_model(data[VIEW_MIME].model_id));
    Widget.attach(view.luminoWidget, host);
    roots.push(view.luminoWidget);
  } else if (data["text/html"] || data["image/svg+xml"]) {
    host.innerHTML = [].concat(data["text/html"] || data["image/svg+xml"]).join("");
  } else if (data["image/png"] || data["image/jpeg"]) {
    const img = document.createElement("img");
    const type = data["image/png"] ? "image/png" : "image/jpeg";
    img.src = `data:${type};base64,${data[type]}`;
    host.appendChild(img);
  } else {
    const pre = document.createElement("pre");
    pre.textContent = [].concat(output.text || data["text/plain"] || []).join("") ||
      (output.ename ? `${output.ename}: ${output.evalue}` : "");
    host.appendChild(pre);
  }
}

async function main() {
  const settings = ServerConnection.makeSettings({ baseUrl: config.baseUrl });
  const model = await KernelAPI.getKernelModel(config.kernelId, settings);
  const kernel = new KernelConnection({ model, serverSettings: settings });
  const manager = new PageManager(kernel);
  window.addEventListener("beforeunload", () => {
    const form = new FormData();
    const xsrf = document.cookie.match("\\b_xsrf=([^;]*)\\b");
    form.append("_xsrf", (xsrf && xsrf[1]) || "");
    navigator.sendBeacon(`${config.baseUrl}voila/api/shutdown/${kernel.id}`, form);
    kernel.dispose();
  });
  await manager._loadFromKernel();
  const roots = []; // the page's widgets; a window resize reaches the charts through them
  window.addEventListener("resize", () => {
    for (const root of roots) MessageLoop.sendMessage(root, Widget.ResizeMessage.UnknownSize);
  });
  for (const script of document.querySelectorAll('script[type="application/vnd.voila.cell-output+json"]')) {
    const host = document.createElement("div");
    host.className = "deepe-output";
    script.replaceWith(host);
    try {
      await drawOutput(JSON.parse(script.textContent), host, manager, roots);
    } catch (error) { // one output that cannot be drawn does not take the page with it
      console.error(error);
      host.innerHTML = `<pre class="deepe-page-error">This output could not be drawn: ${escapeHtml(error)}</pre>`;
    }
  }
  document.getElementById("loading")?.remove();
  document.getElementById("rendered_cells").style.display = "";
}

main().catch((error) => {
  console.error(error);
  document.getElementById("loading")?.remove();
  const box = document.getElementById("rendered_cells");
  box.style.display = "";
  box.insertAdjacentHTML("afterbegin", `<pre class="deepe-page-error">This page could not start: ${escapeHtml(error)}</pre>`);
});
