// Shared by perfnb's widgets (inlined into each widget's ESM by the kernel side):
// h(tag, attrs, ...children) builds a DOM element; "class" sets the class name,
// "data-*" keys become attributes, other keys are set as properties.
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") {
      node.className = v;
    } else if (k.startsWith("data-")) {
      node.setAttribute(k, v);
    } else {
      node[k] = v;
    }
  }
  for (const child of children) {
    node.append(child);
  }
  return node;
}
