// smtpgate admin: confirm destructive buttons, copy a password shown once.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button) return;
  const question = button.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
    return;
  }
  const source = button.dataset.copy && document.getElementById(button.dataset.copy);
  if (source && navigator.clipboard) {
    navigator.clipboard.writeText(source.textContent).then(() => { button.textContent = "Copied"; });
  }
});
